"""einspace.tasks: Unseen-NAS-style tasks, the Unseen-NAS file format and training recipes."""
