// Marks functions shared by the CPU kernels and the CUDA device code.
#pragma once

#if defined(__CUDACC__)
#define FASTMASK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTMASK_HOST_DEVICE inline
#endif
