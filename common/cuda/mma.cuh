// Tensor-core building blocks shared by the FlashAttention-2 kernel and the
// grouped expert GEMM: BF16 packing, mma.sync m16n8k16 (BF16 in, fp32
// accumulate), ldmatrix and cp.async. sm_80 and newer. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace krasis::cuda {

__device__ inline uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// c += a b for one m16n8k16 tile: a the four A fragments (row-major 16x16),
// b0/b1 the two B fragments (k 0..7 and 8..15 of an 8-column slice).
__device__ inline void MmaBf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 BF16 matrices from shared memory: lane i gives the address of row
// i % 8 of matrix i / 8; r[m] is this lane's fragment of matrix m.
__device__ inline void LdMatrixX4(uint32_t r[4], const void* smem_row) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The same from a shared-space address (__cvta_generic_to_shared): kernels that
// keep 32-bit tile addresses let constant offsets fold into the instruction
// instead of holding a 64-bit generic pointer per fragment.
__device__ inline void LdMatrixX4(uint32_t r[4], uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}
// Each matrix transposed: r[m] holds what LdMatrixX4 would give for the
// transpose of matrix m. Reads a row-major [k][n] tile (V in attention) as
// mma.sync's column-major B fragments without a transposed copy in memory.
__device__ inline void LdMatrixX4Trans(uint32_t r[4], uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

// 16 bytes global -> shared without the registers; zero-filled when !valid
// (src must still be a valid address then).
__device__ inline void CpAsync16(void* smem, const void* src, bool valid) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(bytes));
}
// 8 bytes (for sources aligned to 8 but not 16).
__device__ inline void CpAsync8(void* smem, const void* src, bool valid) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 8 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(addr), "l"(src), "r"(bytes));
}
__device__ inline void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ inline void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace krasis::cuda
