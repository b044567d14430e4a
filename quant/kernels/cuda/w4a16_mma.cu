// W4A16 for small batches (8 activation rows per launch tile): fp16 activations times group-wise int4 weights
// stored in quant.packing's layout, dequantized in registers straight into mma.sync B fragments.
//
// The weight stays in its stored layout; the permutation is on the activation side. A packed word holds
// nibbles j and j + 4 in bits 4j and 4j + 16, K rows 128 apart, so one LOP3 with 0x000f000f (or 0x00f000f0)
// and the fp16 magic 0x6400 turns two nibbles into an fp16 pair (1024 + q, or 1024 + 16 q): one MMA operand
// register once the activation register pairs the same two K rows. Lane (g, tq) of a warp reads packed rows
// 8 tq .. 8 tq + 7 of each 256-row tile for block columns 4 g .. 4 g + 3 (one 16-byte load per row) and the
// activation chunks x[row, 32 m + 8 tq .. + 7] (m = 0..7), whose halves it pairs with one PRMT per register.
// Warps of a block split K by tile and sum their fp32 fragments in shared memory; one pass adds the bias and
// stores fp16. w4a16_wide_kernel (9..64 rows) dequantizes each weight once for all its row tiles.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_fp16.h>
#include <cstdint>

namespace {

template <uint32_t MASK>
__device__ __forceinline__ uint32_t magic_pair(uint32_t w) {
  uint32_t r;  // (w & MASK) | 0x64006400 in one LOP3
  asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(r) : "r"(w), "n"(MASK), "n"(0x64006400));
  return r;
}

__device__ __forceinline__ uint32_t as_u32(half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ half2 as_h2(uint32_t u) { return *reinterpret_cast<half2*>(&u); }

__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 load_stream(const int32_t* p) {
  uint4 r;  // weights are read once: do not keep them in L1
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Four B registers (nibble pairs j = 0..3 of one word) as (q - zero) * scale, one rounding each.
__device__ __forceinline__ void dequant_word(uint32_t w, const uint32_t* s, const uint32_t* nzs, uint32_t* b) {
  const half2 k1024 = __float2half2_rn(1024.f), k16th = __float2half2_rn(1.f / 16.f);
  const half2 km64 = __float2half2_rn(-64.f);
  const uint32_t w8 = w >> 8;
  half2 q0 = __hsub2(as_h2(magic_pair<0x000f000f>(w)), k1024);        // nibbles 0, 4
  half2 q1 = __hfma2(as_h2(magic_pair<0x00f000f0>(w)), k16th, km64);  // nibbles 1, 5
  half2 q2 = __hsub2(as_h2(magic_pair<0x000f000f>(w8)), k1024);       // nibbles 2, 6
  half2 q3 = __hfma2(as_h2(magic_pair<0x00f000f0>(w8)), k16th, km64); // nibbles 3, 7
  b[0] = as_u32(__hfma2(q0, as_h2(s[0]), as_h2(nzs[0])));
  b[1] = as_u32(__hfma2(q1, as_h2(s[1]), as_h2(nzs[1])));
  b[2] = as_u32(__hfma2(q2, as_h2(s[2]), as_h2(nzs[2])));
  b[3] = as_u32(__hfma2(q3, as_h2(s[3]), as_h2(nzs[3])));
}

// The product runs transposed (y^T = W^T x^T): dequantized weights are the A operand (16 output columns, two
// of each lane's four), activations the B operand (the 8 rows of this block's row tile). NJ: distinct scale
// rows among the 4 nibble pairs of a word (4 for groups of 32, 2 for 64, 1 for >= 128). A warp loads the
// weights of its next tile before it computes the current one.
template <int NJ>
__global__ void __launch_bounds__(256, 2) w4a16_mma_kernel(
    const half* __restrict__ x, const int32_t* __restrict__ qw, const half* __restrict__ scales,
    const half* __restrict__ zeros, const float* __restrict__ bias, half* __restrict__ out,
    int M, int N, int K, int n_tiles, int group_log2) {
  __shared__ float red[8 * 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, tq = lane & 3;
  // lanes past the last column or row read column N - 4 or row 0 instead: their results are never stored
  const int n0 = blockIdx.x * 32, m0 = blockIdx.y * 8, col = min(n0 + 4 * g, N - 4);
  for (int i = threadIdx.x; i < 8 * 32; i += blockDim.x) red[i] = 0.f;
  __syncthreads();
  const half* xr = x + (size_t)(m0 + g < M ? m0 + g : 0) * K + 8 * tq;
  const int32_t* wp = qw + (size_t)(8 * tq) * N + col;
  float acc[2][4] = {};
  uint4 w[8];  // the host gives a block no more warps than tiles
#pragma unroll
  for (int u = 0; u < 8; ++u) w[u] = load_stream(wp + (size_t)(warp * 32 + u) * N);
  for (int t = warp; t < n_tiles; t += warps) {
    uint4 xc[8];
#pragma unroll
    for (int m = 0; m < 8; ++m) xc[m] = __ldg(reinterpret_cast<const uint4*>(xr + t * 256 + 32 * m));
    uint4 wn[8];  // the next tile's words, in flight while this one is computed
    const int tn = t + warps < n_tiles ? t + warps : t;
#pragma unroll
    for (int u = 0; u < 8; ++u) wn[u] = load_stream(wp + (size_t)(tn * 32 + u) * N);
    uint32_t s2[NJ][4], nzs2[NJ][4];  // per distinct pair j and column c: (scale, -zero * scale) of rows j, j + 4
#pragma unroll
    for (int jg = 0; jg < NJ; ++jg) {
      const int klo = t * 256 + 32 * jg * (4 / NJ);
      const size_t rlo = (size_t)(klo >> group_log2) * N + col, rhi = (size_t)((klo + 128) >> group_log2) * N + col;
      const uint2 slo = __ldg(reinterpret_cast<const uint2*>(scales + rlo));
      const uint2 shi = __ldg(reinterpret_cast<const uint2*>(scales + rhi));
      const uint2 zlo = __ldg(reinterpret_cast<const uint2*>(zeros + rlo));
      const uint2 zhi = __ldg(reinterpret_cast<const uint2*>(zeros + rhi));
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const uint32_t sel = c & 1 ? 0x7632 : 0x5410;
        const uint32_t sp = __byte_perm(c < 2 ? slo.x : slo.y, c < 2 ? shi.x : shi.y, sel);
        const uint32_t zp = __byte_perm(c < 2 ? zlo.x : zlo.y, c < 2 ? zhi.x : zhi.y, sel);
        s2[jg][c] = sp;
        nzs2[jg][c] = as_u32(__hneg2(__hmul2(as_h2(zp), as_h2(sp))));
      }
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      // B fragments of steps 2u (pairs j = 0, 1) and 2u + 1 (pairs 2, 3): element u of chunks m and m + 4
      const uint32_t sel = u & 1 ? 0x7632 : 0x5410;
      uint32_t b[2][2];
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        b[p][0] = __byte_perm(word(xc[2 * p], u >> 1), word(xc[2 * p + 4], u >> 1), sel);
        b[p][1] = __byte_perm(word(xc[2 * p + 1], u >> 1), word(xc[2 * p + 5], u >> 1), sel);
      }
#pragma unroll
      for (int cp = 0; cp < 2; ++cp) {  // A rows g and g + 8: this lane's columns 2 cp and 2 cp + 1
        uint32_t d[2][4];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int c = 2 * cp + h;
          uint32_t s[4], nzs[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            s[j] = s2[j / (4 / NJ)][c];
            nzs[j] = nzs2[j / (4 / NJ)][c];
          }
          dequant_word(word(w[u], c), s, nzs, d[h]);
        }
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          const uint32_t a[4] = {d[0][2 * p], d[1][2 * p], d[0][2 * p + 1], d[1][2 * p + 1]};
          mma16816(acc[cp], a, b[p][0], b[p][1]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) w[u] = wn[u];
  }
#pragma unroll
  for (int cp = 0; cp < 2; ++cp) {  // fragment (A row g [+8] = column 4 g + 2 cp [+1], B column 2 tq [+1] = row)
    const int r = 2 * tq, c = 4 * g + 2 * cp;
    atomicAdd(&red[r * 32 + c], acc[cp][0]);
    atomicAdd(&red[(r + 1) * 32 + c], acc[cp][1]);
    atomicAdd(&red[r * 32 + c + 1], acc[cp][2]);
    atomicAdd(&red[(r + 1) * 32 + c + 1], acc[cp][3]);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 8 * 32; i += blockDim.x) {
    const int row = m0 + (i >> 5), n = n0 + (i & 31);
    if (row < M && n < N) out[(size_t)row * N + n] = __float2half_rn(red[i] + (bias ? bias[n] : 0.f));
  }
}

// The wide variant, for 9..64 activation rows (MT tiles of 8): each warp owns 32 output columns over a range of
// K tiles (blockIdx.z splits K) and dequantizes each weight once for all MT row tiles. The activations come
// pre-permuted (w4a16_cuda.permute_activations): for K tile t, row tile mt, step u and lane, one 16-byte word
// holds that lane's B registers b[0][0], b[0][1], b[1][0], b[1][1] exactly as w4a16_mma_kernel builds them with
// PRMT, so a warp reads 512 contiguous bytes per (mt, u), shared through L1 by the warps of a block.
template <int MT>
__global__ void __launch_bounds__(256) w4a16_wide_kernel(
    const uint4* __restrict__ xp, const int32_t* __restrict__ qw, const half* __restrict__ scales,
    const half* __restrict__ zeros, const float* __restrict__ bias, half* __restrict__ out,
    float* __restrict__ partial, int M, int N, int n_tiles, int tiles_per_split, int group_log2) {
  const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int n0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 32;
  const int t0 = blockIdx.z * tiles_per_split, t1 = min(n_tiles, t0 + tiles_per_split);
  if (n0 >= N || t0 >= t1) return;  // no shared memory, no barrier: an idle warp may leave
  const int col = min(n0 + 4 * g, N - 4);  // lanes past N compute column N - 4 and store nothing
  const int32_t* wp = qw + (size_t)(8 * tq) * N + col;
  float acc[MT][2][4] = {};
  uint4 w[8];
#pragma unroll
  for (int u = 0; u < 8; ++u) w[u] = load_stream(wp + (size_t)(t0 * 32 + u) * N);
  for (int t = t0; t < t1; ++t) {
    uint4 wn[8];  // the next tile's words, in flight while this one is computed
    const int tn = t + 1 < t1 ? t + 1 : t;
#pragma unroll
    for (int u = 0; u < 8; ++u) wn[u] = load_stream(wp + (size_t)(tn * 32 + u) * N);
    // groups of >= 128 rows: one (scale, -zero * scale) pair per column for nibbles j (row klo) and j + 4
    const size_t rlo = (size_t)((t * 256) >> group_log2) * N + col;
    const size_t rhi = (size_t)((t * 256 + 128) >> group_log2) * N + col;
    const uint2 slo = __ldg(reinterpret_cast<const uint2*>(scales + rlo));
    const uint2 shi = __ldg(reinterpret_cast<const uint2*>(scales + rhi));
    const uint2 zlo = __ldg(reinterpret_cast<const uint2*>(zeros + rlo));
    const uint2 zhi = __ldg(reinterpret_cast<const uint2*>(zeros + rhi));
    uint32_t s[4][4], nzs[4][4];  // [column c][pair j], the same for every j
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const uint32_t sel = c & 1 ? 0x7632 : 0x5410;
      const uint32_t sp = __byte_perm(c < 2 ? slo.x : slo.y, c < 2 ? shi.x : shi.y, sel);
      const uint32_t zp = __byte_perm(c < 2 ? zlo.x : zlo.y, c < 2 ? zhi.x : zhi.y, sel);
      const uint32_t nz = as_u32(__hneg2(__hmul2(as_h2(zp), as_h2(sp))));
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s[c][j] = sp;
        nzs[c][j] = nz;
      }
    }
    const uint4* xt = xp + (size_t)t * MT * 8 * 32 + lane;  // [t][mt][u][lane]
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      uint32_t d[4][4];  // [column c][pair j]: A registers of step u
#pragma unroll
      for (int c = 0; c < 4; ++c) dequant_word(word(w[u], c), s[c], nzs[c], d[c]);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 b = __ldg(xt + (mt * 8 + u) * 32);
#pragma unroll
        for (int cp = 0; cp < 2; ++cp) {  // A rows g and g + 8: columns 2 cp and 2 cp + 1
          const uint32_t a0[4] = {d[2 * cp][0], d[2 * cp + 1][0], d[2 * cp][1], d[2 * cp + 1][1]};
          const uint32_t a1[4] = {d[2 * cp][2], d[2 * cp + 1][2], d[2 * cp][3], d[2 * cp + 1][3]};
          mma16816(acc[mt][cp], a0, b.x, b.y);
          mma16816(acc[mt][cp], a1, b.z, b.w);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) w[u] = wn[u];
  }
  const bool add_bias = bias != nullptr && blockIdx.z == 0;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int cp = 0; cp < 2; ++cp) {  // fragment (A row g [+8] = column c [+1], B column 2 tq [+1] = row)
      const int c = n0 + 4 * g + 2 * cp, r = 8 * mt + 2 * tq;
      if (c >= N) continue;  // N % 4 == 0: column c + 1 is inside too
      const float b0 = add_bias ? bias[c] : 0.f, b1 = add_bias ? bias[c + 1] : 0.f;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        if (r + rr >= M) continue;
        const float v0 = acc[mt][cp][rr] + b0, v1 = acc[mt][cp][2 + rr] + b1;
        const size_t o = (size_t)(r + rr) * N + c;
        if (partial) {  // K split over blocks: float32 sums, cast by the host
          atomicAdd(partial + o, v0);
          atomicAdd(partial + o + 1, v1);
        } else {
          *reinterpret_cast<half2*>(out + o) = __floats2half2_rn(v0, v1);
        }
      }
    }
  }
}

// The weight side of both entry points: packed words, fp16 scales and zeros, the fp32 bias or null.
struct WeightArgs {
  const int32_t* q;
  const half* scales;
  const half* zeros;
  const float* bias;
  WeightArgs(const torch::Tensor& qweight, const torch::Tensor& s, const torch::Tensor& z, const torch::Tensor& b)
      : q(qweight.data_ptr<int32_t>()), scales(reinterpret_cast<const half*>(s.data_ptr<at::Half>())),
        zeros(reinterpret_cast<const half*>(z.data_ptr<at::Half>())),
        bias(b.numel() ? b.data_ptr<float>() : nullptr) {}
};

}  // namespace

// x [M, Kp] fp16 contiguous (zero columns past K up to the weight's Kp rows), qweight [Kp / 8, N] int32
// (N % 4 == 0), scales/zeros [Kp / G, N] fp16, bias fp32 [N] or empty; returns fp16 [M, N] = x @ W + bias.
// The caller checks shapes and dtypes.
torch::Tensor w4a16_mma(torch::Tensor x, torch::Tensor qweight, torch::Tensor scales, torch::Tensor zeros,
                        torch::Tensor bias, int64_t group_size, int64_t warps) {
  const at::cuda::OptionalCUDAGuard guard(x.device());
  const int M = x.size(0), K = x.size(1), N = qweight.size(1), tiles = qweight.size(0) / 32;
  auto out = torch::empty({M, N}, x.options());
  const int glog = 31 - __builtin_clz((unsigned)group_size);
  const dim3 grid((N + 31) / 32, (M + 7) / 8), block(32 * warps);
  auto stream = at::cuda::getCurrentCUDAStream();
  const half* xp = reinterpret_cast<const half*>(x.data_ptr<at::Half>());
  const WeightArgs w(qweight, scales, zeros, bias);
  half* op = reinterpret_cast<half*>(out.data_ptr<at::Half>());
  if (group_size >= 128)
    w4a16_mma_kernel<1><<<grid, block, 0, stream>>>(xp, w.q, w.scales, w.zeros, w.bias, op, M, N, K, tiles, glog);
  else if (group_size == 64)
    w4a16_mma_kernel<2><<<grid, block, 0, stream>>>(xp, w.q, w.scales, w.zeros, w.bias, op, M, N, K, tiles, glog);
  else
    w4a16_mma_kernel<4><<<grid, block, 0, stream>>>(xp, w.q, w.scales, w.zeros, w.bias, op, M, N, K, tiles, glog);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// xp: the activations permuted by w4a16_cuda.permute_activations for m_tiles row tiles (fp16, 8 m_tiles rows,
// zero rows past M), qweight [Kp / 8, N] int32 (N % 4 == 0), scales/zeros [Kp / G, N] fp16 with G >= 128, bias
// fp32 [N] or empty; blocks of `warps` warps (32 columns each), K split over `splits` blocks (float32 atomics,
// cast once). Returns fp16 [M, N] = x @ W + bias. The caller checks shapes and dtypes.
torch::Tensor w4a16_wide(torch::Tensor xp, torch::Tensor qweight, torch::Tensor scales, torch::Tensor zeros,
                         torch::Tensor bias, int64_t group_size, int64_t M, int64_t m_tiles, int64_t warps,
                         int64_t splits) {
  const at::cuda::OptionalCUDAGuard guard(xp.device());
  const int N = qweight.size(1), tiles = qweight.size(0) / 32;
  const int per = (tiles + splits - 1) / splits, parts = (tiles + per - 1) / per;
  const int glog = 31 - __builtin_clz((unsigned)group_size);
  torch::Tensor out, partial;
  if (parts > 1) {
    partial = torch::zeros({M, N}, xp.options().dtype(torch::kFloat32));
  } else {
    out = torch::empty({M, N}, xp.options());
  }
  const dim3 grid((N + 32 * warps - 1) / (32 * warps), 1, parts), block(32 * warps);
  auto stream = at::cuda::getCurrentCUDAStream();
  const uint4* xq = reinterpret_cast<const uint4*>(xp.data_ptr<at::Half>());
  const WeightArgs w(qweight, scales, zeros, bias);
  half* op = parts > 1 ? nullptr : reinterpret_cast<half*>(out.data_ptr<at::Half>());
  float* pp = parts > 1 ? partial.data_ptr<float>() : nullptr;
  if (m_tiles <= 2)
    w4a16_wide_kernel<2><<<grid, block, 0, stream>>>(xq, w.q, w.scales, w.zeros, w.bias, op, pp, M, N, tiles, per,
                                                     glog);
  else if (m_tiles <= 4)
    w4a16_wide_kernel<4><<<grid, block, 0, stream>>>(xq, w.q, w.scales, w.zeros, w.bias, op, pp, M, N, tiles, per,
                                                     glog);
  else
    w4a16_wide_kernel<8><<<grid, block, 0, stream>>>(xq, w.q, w.scales, w.zeros, w.bias, op, pp, M, N, tiles, per,
                                                     glog);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return parts > 1 ? partial.to(torch::kHalf) : out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("w4a16_mma", &w4a16_mma, "W4A16 x @ W + bias, 8 rows per tile (mma.sync, register dequantization)");
  m.def("w4a16_wide", &w4a16_wide, "W4A16 x @ W + bias for 9..64 rows, activations permuted beforehand");
}
