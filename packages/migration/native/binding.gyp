{
  "targets": [
    {
      "target_name": "tsvmm_migration",
      "sources": ["migration_native.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
    }
  ]
}
