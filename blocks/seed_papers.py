"""The seed list's papers that propose a layer primitive (verdict A in
``shared/research/seed-primitives.md``), by their number in the seed list, with a short title.
Every one of them must have at least one registered terminal (``Terminal.seed_papers``)."""

PRIMITIVE_PAPERS = {
    2: "HyperZ·Z·W operator (Terminator)",
    14: "Selective attention",
    15: "Discrete key-value bottleneck",
    17: "FiRST router-selective skip",
    21: "Inception-ResNet",
    22: "PixPro pixel propagation",
    23: "Single attention layer, random features",
    25: "ConViT gated positional self-attention",
    26: "SLAB simplified linear attention, PRepBN",
    27: "Maestro low-rank layers",
    30: "MULTI-LANE token summarisation",
    31: "FIT far-reaching interleaved transformers",
    33: "Sigmoid self-attention",
    35: "Prototype layer (case-based reasoning)",
    39: "EchoAtt shared attention",
    41: "Sentence attention blocks",
    46: "CRATE white-box transformer (MSSA, ISTA)",
    47: "Axial attention",
    49: "Layer masking",
    53: "AiT soft codebook",
    55: "Momentum attention (ICL as gradient descent)",
    58: "Make deep networks shallow again (parallel sum)",
}
