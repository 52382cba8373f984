"""Deploying to boards of another architecture (aarch64): what runs the `.so` there.

- runtime.py: the board's TVM runtime libraries (from the aarch64 apache-tvm and
  apache-tvm-ffi wheels, fetched as packages) and the C++ loader, cross-compiled
- qcompile_run.cc: that loader (reads .npy inputs, runs the model, writes .npy outputs)
- run_model.py: the same for boards with Python and apache-tvm installed
- bundle.py: `qcompile package`: the .so, the runtime, both loaders and a README in one tarball
- emulate.py: run a cross-compiled .so under qemu-user with the C++ loader (verify --emulate)
"""
