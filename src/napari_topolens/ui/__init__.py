"""Everything that imports napari or Qt lives here; the science never does."""
