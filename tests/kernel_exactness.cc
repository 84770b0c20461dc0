// The kernel's exact replacements for the divider, checked against it on every input:
//   Sqrt(v)      == vsqrtps(v)   for all 2^32 float bit patterns (arg "sqrt"; "sample":
//                                   every 251st), with denormals flushed (as on XLA's
//                                   threads) and, separately, not;
//   Scale255(u)  == u / 255.0f    for all 256 bytes ("bytes").
// Prints "mismatches N" (N = 0 when exact). Built by tests/test_kernel_exactness.py with
// the kernel's compiler flags.
#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "digits_jax/kernels/mlp_adam_cpu.cc"

namespace {

uint64_t SqrtMismatches(uint64_t stride) {
  uint64_t bad = 0;
  for (uint64_t base = 0; base < (1ull << 32); base += 16 * stride) {
    uint32_t bits[16];
    for (int k = 0; k < 16; ++k) bits[k] = static_cast<uint32_t>(base + k * stride);
    V16 v;
    std::memcpy(&v, bits, sizeof v);
    const __m512 want = _mm512_sqrt_ps(reinterpret_cast<__m512>(v));
    const V16 got = Sqrt(v);
    bad += __builtin_popcount(_mm512_cmp_epi32_mask(_mm512_castps_si512(want),
                                                    reinterpret_cast<__m512i>(got),
                                                    _MM_CMPINT_NE));
  }
  return bad;
}

uint64_t ByteMismatches() {
  uint64_t bad = 0;
  for (int u0 = 0; u0 < 256; u0 += 16) {
    V16 u;
    for (int k = 0; k < 16; ++k) u[k] = static_cast<float>(u0 + k);
    const V16 got = Scale255(u);
    for (int k = 0; k < 16; ++k) {
      const float want = static_cast<float>(u0 + k) / 255.0f;
      bad += std::memcmp(&want, &got[k], sizeof want) != 0;
    }
  }
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return std::fprintf(stderr, "usage: %s sqrt|sample|bytes\n", argv[0]), 2;
  const unsigned csr = _mm_getcsr();
  uint64_t bad = 0;
  for (unsigned flush : {0x8040u, 0u}) {  // FTZ and DAZ on (XLA's threads), then off.
    _mm_setcsr((csr & ~0x8040u) | flush);
    if (std::strcmp(argv[1], "bytes") == 0) bad += ByteMismatches();
    else bad += SqrtMismatches(std::strcmp(argv[1], "sample") == 0 ? 251 : 1);
  }
  std::printf("mismatches %llu\n", static_cast<unsigned long long>(bad));
  return 0;
}
