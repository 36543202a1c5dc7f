//! Neural-network kernels for the training engine of frog-bench: plain
//! functions over host slices, built on the same GEMM and im2col as FROG.
