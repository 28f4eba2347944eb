{
  "targets": [
    {
      "target_name": "tsvmm_kvm",
      "sources": [
        "native/addon.c",
        "native/errors.c",
        "native/ioctl.c",
        "native/vm.c",
        "native/vcpu.c",
        "native/fdwatch.c"
      ],
      "defines": ["_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lpthread"]
    },
    {
      "target_name": "tsvmm_guest_ram",
      "sources": ["native/guest_ram.cc"],
      "defines": ["_GNU_SOURCE"],
      "cflags_cc": ["-O2", "-Wall", "-Wextra", "-Wno-cast-function-type"]
    }
  ]
}
