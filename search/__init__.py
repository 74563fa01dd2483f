"""einspace.search: search strategies, Ray Tune execution and the trial store."""
