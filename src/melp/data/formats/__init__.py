"""File formats shared by the readers: WFDB records, MATLAB containers, metadata tables."""
