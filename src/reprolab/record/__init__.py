"""What a run records about itself so that it can be rebuilt, and reads it back: plain values,
no MLflow, no torch.

In: the running code and its checkout, the machine, a user's data file.
Out: `source` (the source archive, its manifest and digest, its git commit), `environment`
(`environment.json`: Python, platform, kernels, distributions, and how two differ),
`data_file` (a file's digests and its bytes in DVC's cache), `code` (the code a run recorded,
unpacked and checked against its manifest). `reprolab.tracking` stores these in MLflow.
"""
