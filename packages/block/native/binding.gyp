{
  "targets": [
    {
      "target_name": "tsvmm_block",
      "sources": ["block_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
