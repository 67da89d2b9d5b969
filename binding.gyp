{
  "targets": [
    {
      "target_name": "libvirt_native",
      "product_name": "libvirt_native",
      "sources": [
        "src/libvirt/native/addon.cc",
        "src/libvirt/native/runtime.cc",
        "src/libvirt/native/connect.cc",
        "src/libvirt/native/domain.cc",
        "src/libvirt/native/network.cc",
        "src/libvirt/native/storage.cc",
        "src/libvirt/native/events.cc",
        "src/libvirt/native/event-loop.cc",
        "src/libvirt/native/stats.cc",
        "src/libvirt/native/snapshot.cc",
        "src/libvirt/native/stream.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags": ["<!@(pkg-config --cflags libvirt)"],
      "libraries": ["<!@(pkg-config --libs libvirt)"]
    }
  ]
}
