"""Encrypted inference: a linear-headed model split into a plaintext front (the client's) and a
linear head the server evaluates on CKKS ciphertexts it cannot read (TenSEAL, Microsoft SEAL)."""
