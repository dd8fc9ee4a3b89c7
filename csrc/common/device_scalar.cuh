// Loads and stores of the kernels' storage types on the device: float and
// double as they are, fp16/bf16 through float (with explicit intrinsics, as
// torch builds with __CUDA_NO_HALF_CONVERSIONS__ and friends).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fastmask {

template <typename T>
struct DeviceScalar {
  using Acc = T;
  static __device__ __forceinline__ Acc load(T v) { return v; }
  static __device__ __forceinline__ T store(Acc v) { return v; }
};

template <>
struct DeviceScalar<__half> {
  using Acc = float;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};

template <>
struct DeviceScalar<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// Arithmetic in T on the device: float/double natively; fp16/bf16 compute in
// float and round every result back to T, as c10::Half / c10::BFloat16 tensor
// ops do on the CPU.
template <typename T_>
struct DeviceArith {
  using T = T_;
  using V = typename DeviceScalar<T>::Acc;
  static __device__ __forceinline__ V load(T v) { return DeviceScalar<T>::load(v); }
  static __device__ __forceinline__ T store(V v) { return DeviceScalar<T>::store(v); }
  static __device__ __forceinline__ V round(V v) { return load(store(v)); }
};

}  // namespace fastmask
