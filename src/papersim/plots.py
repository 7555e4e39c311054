"""Report plots: matplotlib on the file-only Agg backend (no display on servers and in CI)."""


def pyplot():
    """matplotlib.pyplot, imported on first use (it costs ~1 s) with the Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
