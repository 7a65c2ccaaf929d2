// Native CPU kernels of adaptopt's fused optimizer steps (adaptopt/optim/_fused/native.py).
//
// One call updates every tensor of a parameter group: the elements of all tensors are cut
// into chunks that one OpenMP parallel region shares out (on torch's OpenMP runtime, with
// torch.get_num_threads() threads), and each chunk is one pass over memory: x, g and the
// state are read once, the state and x written once. The element loops are vectorized by the
// compiler (#pragma omp simd), which needs a body without branches: selects whose arms
// cannot trap, no division or comparison made only on one side of a condition; GCC reports
// the loops it leaves scalar with -fopt-info-vec-missed, and tests/optim/test_native.py checks
// that the builds hold packed square roots and divisions. A scalar element loop made the
// Generalized SignSGD step compute-bound (2.6x torch's fused Adam on AMD EPYC, see
// benchmarks/RESULTS.md). The loops ask to prefetch each stream PREFETCH_BYTES ahead (on one
// out-of-cache tensor 5-8% faster than without on Intel Xeon). GCC 12 emits no prefetches in
// the Generalized SignSGD and Lion loops, though; forced in, they measured within noise of
// none on AMD EPYC, whose hardware prefetchers follow these streams.
//
// The arithmetic is the one of kernels.py (same coefficient vectors k: their layout is defined
// once in layout.py), in float for float32/bfloat16/float16 parameters and double for float64
// ones; parameters and state are rounded to their own dtype when stored.
//
// Plain C++, no Python or torch headers: setup.py builds it into a shared library when the
// package is installed, and native.py loads it with ctypes. Every id below (kernels, dtypes,
// flags, status codes, coefficient indices K_<KERNEL>_<FIELD>) comes from layout.defines()
// as -D flags: layout.py is their one definition, and this file does not compile without them.

#if !defined(KERNEL_GSIGNSGD) || !defined(DTYPE_FLOAT32) || !defined(FLAG_SQUARE_GRADIENT) || \
    !defined(STATUS_OK) || !defined(K_GSIGNSGD_EPS) || !defined(ADAPTOPT_FUSED_ABI)
#error "build with the -D flags of adaptopt/optim/_fused/layout.py (setup.py passes them)"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

struct bf16 {
  uint16_t bits;
};
// IEEE binary16, converted with integer operations only: x86-64's baseline has no F16C, and
// the compiler's _Float16 conversions are library calls that keep the element loops scalar
// (float16 parameters were 19x slower than bfloat16 ones); integer selects vectorize, and
// denormals-are-zero modes cannot touch half subnormals. Round to nearest even and NaN to the
// quiet NaN, as torch's float -> half conversion.
struct f16 {
  uint16_t bits;
};

inline float half_to_float(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu,
                 mantissa = h & 0x3ffu;
  const uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);  // rebias 15 -> 127
  const uint32_t special = 0x7f800000u | (mantissa << 13);                // Inf and NaN
  const float small = static_cast<float>(static_cast<int32_t>(mantissa)) * 0x1p-24f;  // exact
  uint32_t small_bits;
  std::memcpy(&small_bits, &small, sizeof small_bits);
  // Selected with masks: GCC 12 turns the equivalent ?: chain into branches here.
  const uint32_t zero_mask = 0u - static_cast<uint32_t>(exponent == 0);
  const uint32_t inf_mask = 0u - static_cast<uint32_t>(exponent == 31);
  const uint32_t wide = (special & inf_mask) | (normal & ~inf_mask);
  const uint32_t u = sign | (small_bits & zero_mask) | (wide & ~zero_mask);
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  // |f| >= 2^-14: rebias the exponent, round the 13 dropped bits to nearest even.
  const uint32_t normal = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // |f| < 2^-14: the half subnormal |f| 2^24 from the 24-bit significand, shifted right by
  // 126 - exponent (at least 14 here; clamped so that the unused arm's shift is defined).
  const int32_t exponent = static_cast<int32_t>(a >> 23);
  const uint32_t shift = static_cast<uint32_t>(std::clamp(126 - exponent, 1, 31));
  const uint32_t significand = (a & 0x7fffffu) | 0x800000u;
  const uint32_t subnormal =
      (significand + ((1u << (shift - 1)) - 1u) + ((significand >> shift) & 1u)) >> shift;
  const uint32_t magnitude = a > 0x7f800000u    ? 0x7e00u   // NaN
                             : a >= 0x477ff000u ? 0x7c00u   // rounds past 65504: Inf
                             : a >= 0x38800000u ? normal
                                                : subnormal;
  return static_cast<uint16_t>(sign | magnitude);
}

constexpr int64_t CHUNK = 1 << 15;          // elements a thread takes at a time
constexpr int64_t BLOCK = 64;               // elements between prefetches (vector loop)
constexpr int64_t PREFETCH_BYTES = 2048;    // prefetch distance, per stream
constexpr int64_t SERIAL_NUMEL = 1 << 16;   // below this many elements in all, one thread

template <class C, class T>
inline C load(const T* p, int64_t i) {
  return static_cast<C>(p[i]);
}
template <class C>
inline C load(const bf16* p, int64_t i) {
  uint32_t u = static_cast<uint32_t>(p[i].bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return static_cast<C>(f);
}

template <class C>
inline C load(const f16* p, int64_t i) {
  return static_cast<C>(half_to_float(p[i].bits));
}

template <class T, class C>
inline void store(T* p, int64_t i, C value) {
  p[i] = static_cast<T>(value);
}
template <class C>
inline void store(bf16* p, int64_t i, C value) {
  // Round to nearest even, as torch's float -> bfloat16 conversion; NaN stays NaN.
  float f = static_cast<float>(value);
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  uint16_t bits = (u & 0x7fffffffu) > 0x7f800000u
                      ? static_cast<uint16_t>((u >> 16) | 0x40u)
                      : static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  p[i].bits = bits;
}

template <class C>
inline void store(f16* p, int64_t i, C value) {
  p[i].bits = float_to_half(static_cast<float>(value));
}

template <class T>
inline void prefetch(const T* p, int64_t i) {
  const char* address = reinterpret_cast<const char*>(p + i) + PREFETCH_BYTES;
  for (int64_t offset = 0; offset < BLOCK * static_cast<int64_t>(sizeof(T)); offset += 64)
    __builtin_prefetch(address + offset, 1, 0);
}

// d = s g + λ2 x (without ReadX, x is not read: λ2 = 0).
template <bool ReadX, class C, class P>
inline C coupled(const P* x, const P* g, int64_t i, C sign, C l2) {
  const C d = sign * load<C>(g, i);
  if constexpr (ReadX) return d + l2 * load<C>(x, i);
  return d;
}

// Runs body(tensor, begin, end) over chunks of all n tensors in one parallel region. Each
// body returns Sums (zeros unless it reduces); their total is summed in chunk order, so that
// it does not depend on the number of threads.
struct Sums {
  double a = 0, b = 0;
};

template <class Body>
Sums for_chunks(int64_t n, const int64_t* numel, int threads, Body body) {
  std::vector<int64_t> first(n + 1, 0);  // first chunk of each tensor
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    first[i + 1] = first[i] + (numel[i] + CHUNK - 1) / CHUNK;
    total += numel[i];
  }
  std::vector<Sums> partial(first[n]);
#pragma omp parallel for schedule(static) num_threads(threads) if (total > SERIAL_NUMEL)
  for (int64_t c = 0; c < first[n]; ++c) {
    const int64_t i = std::upper_bound(first.begin(), first.end(), c) - first.begin() - 1;
    const int64_t begin = (c - first[i]) * CHUNK;
    partial[c] = body(i, begin, std::min(begin + CHUNK, numel[i]));
  }
  Sums sums;
  for (const Sums& s : partial) sums.a += s.a, sums.b += s.b;
  return sums;
}

// Calls element(j) for j in [begin, end): vectorized blocks of BLOCK with prefetches, then
// the tail.
template <class Prefetch, class Element>
inline void blocked(int64_t begin, int64_t end, Prefetch ahead, Element element) {
  int64_t j = begin;
  for (; j + BLOCK <= end; j += BLOCK) {
    ahead(j);
#pragma omp simd
    for (int64_t e = j; e < j + BLOCK; ++e) element(e);
  }
  for (; j < end; ++j) element(j);
}

// Generalized SignSGD / Adam (kernels.gsignsgd). v == nullptr when β2 = 0.
template <class P, class S, bool HasV, bool SquareGradient>
Sums gsignsgd_chunk(P* x, const P* g, S* m, S* v, const double* k, int64_t begin,
                    int64_t end) {
  using C = std::conditional_t<std::is_same_v<P, double>, double, float>;
  const C sign = k[K_GSIGNSGD_SIGN], l2 = k[K_GSIGNSGD_L2], beta1 = k[K_GSIGNSGD_BETA1],
          one_minus_beta1 = k[K_GSIGNSGD_ONE_MINUS_BETA1], beta2 = k[K_GSIGNSGD_BETA2],
          one_minus_beta2 = k[K_GSIGNSGD_ONE_MINUS_BETA2],
          inv_sqrt_bc2 = k[K_GSIGNSGD_INV_SQRT_BC2], eps = k[K_GSIGNSGD_EPS],
          decay = k[K_GSIGNSGD_DECAY], step = k[K_GSIGNSGD_STEP_SIZE];
  blocked(
      begin, end,
      [&](int64_t j) {
        prefetch(x, j), prefetch(g, j), prefetch(m, j);
        if constexpr (HasV) prefetch(v, j);
      },
      [&](int64_t j) {
        const C xj = load<C>(x, j);
        const C d = coupled<true, C>(x, g, j, sign, l2);
        const C m_t = beta1 * load<C>(m, j) + one_minus_beta1 * d;
        const C squared = SquareGradient ? d : m_t;
        C root;
        if constexpr (HasV) {
          const C v_t = beta2 * load<C>(v, j) + one_minus_beta2 * squared * squared;
          store(v, j, v_t);
          root = std::sqrt(v_t);
        } else {
          root = std::abs(squared);
        }
        const C denom = root * inv_sqrt_bc2 + eps;
        // 0/0 := 0. The divisor is chosen arithmetically (denom + 1 exactly when it is 0):
        // with a ?: select, GCC moves the division into a branch (m_t / 1 = m_t), which it
        // cannot vectorize, since the division may trap (benchmarks/RESULTS.md).
        const C u = m_t / (denom + C(denom == C(0)));
        store(m, j, m_t);
        store(x, j, decay * xj + step * u);
      });
  return {};
}

// Lion (kernels.lion).
template <class P, class S>
Sums lion_chunk(P* x, const P* g, S* m, const double* k, int64_t begin, int64_t end) {
  using C = std::conditional_t<std::is_same_v<P, double>, double, float>;
  const C sign = k[K_LION_SIGN], l2 = k[K_LION_L2], beta1 = k[K_LION_BETA1],
          one_minus_beta1 = k[K_LION_ONE_MINUS_BETA1], beta2 = k[K_LION_BETA2],
          one_minus_beta2 = k[K_LION_ONE_MINUS_BETA2], decay = k[K_LION_DECAY],
          step = k[K_LION_STEP_SIZE];
  blocked(
      begin, end, [&](int64_t j) { prefetch(x, j), prefetch(g, j), prefetch(m, j); },
      [&](int64_t j) {
        const C xj = load<C>(x, j);
        const C d = coupled<true, C>(x, g, j, sign, l2);
        const C m_prev = load<C>(m, j);
        const C c = beta1 * m_prev + one_minus_beta1 * d;
        // sign; NaN and ±0 stay. A select of values without a nested ?: (with one, GCC 12
        // branched on the comparisons and left the loop scalar).
        const bool nonzero = (c > C(0)) | (c < C(0));
        const C u = nonzero ? std::copysign(C(1), c) : c;
        store(m, j, beta2 * m_prev + one_minus_beta2 * d);
        store(x, j, decay * xj + step * u);
      });
  return {};
}

// Momentum direction of clipping/normalization (kernels.momentum_direction):
// k starts with layout.MOMENTUM_SUMS (s, λ2, μ, c_d, c_b); without HasB there is no momentum buffer (b̃ = b_t = d).
template <class C>
struct Momentum {
  C sign, l2, momentum, c_d, c_b;
  explicit Momentum(const double* k)
      : sign(k[K_MOMENTUM_SUMS_SIGN]),
        l2(k[K_MOMENTUM_SUMS_L2]),
        momentum(k[K_MOMENTUM_SUMS_MOMENTUM]),
        c_d(k[K_MOMENTUM_SUMS_C_D]),
        c_b(k[K_MOMENTUM_SUMS_C_B]) {}

  // Sets d, b_t and b̃ of element j.
  template <bool ReadX, bool HasB, class P, class S>
  void direction(const P* x, const P* g, const S* b, int64_t j, C& d, C& b_t, C& b_tilde) const {
    d = coupled<ReadX, C>(x, g, j, sign, l2);
    if constexpr (HasB) {
      b_t = momentum * load<C>(b, j) + d;
      b_tilde = c_d * d + c_b * b_t;
    } else {
      b_t = b_tilde = d;
    }
  }
};

// Pass 1 of clipping/normalization (kernels.momentum_sums): (Σ d², Σ b̃²). LANES partial
// sums in the compute dtype, lane l taking every LANES-th element, are added into double
// sums every FLUSH elements (FLUSH / LANES terms per lane; lane 0 also takes the tail of a
// chunk, fewer than BLOCK elements). x is read only with coupled L2 decay (ReadX).
template <bool ReadX, bool HasB, class P, class S>
Sums momentum_sums_chunk(const P* x, const P* g, const S* b, const double* k, int64_t begin,
                         int64_t end) {
  using C = std::conditional_t<std::is_same_v<P, double>, double, float>;
  constexpr int64_t LANES = 32, FLUSH = 16 * BLOCK;
  static_assert(BLOCK % LANES == 0);
  const Momentum<C> coefficients(k);
  double total_dd[LANES] = {}, total_bb[LANES] = {};
  C dd[LANES] = {}, bb[LANES] = {};
  const auto add = [&](int64_t e, int64_t lane) {
    C d, b_t, b_tilde;
    coefficients.template direction<ReadX, HasB>(x, g, b, e, d, b_t, b_tilde);
    dd[lane] += d * d;
    bb[lane] += b_tilde * b_tilde;
  };
  const auto flush = [&] {
    for (int64_t lane = 0; lane < LANES; ++lane) {
      total_dd[lane] += dd[lane], total_bb[lane] += bb[lane];
      dd[lane] = bb[lane] = 0;
    }
  };
  int64_t j = begin;
  for (; j + BLOCK <= end; j += BLOCK) {
    if constexpr (ReadX) prefetch(x, j);
    prefetch(g, j);
    if constexpr (HasB) prefetch(b, j);
    for (int64_t e = j; e < j + BLOCK; e += LANES) {
#pragma omp simd
      for (int64_t lane = 0; lane < LANES; ++lane) add(e + lane, lane);
    }
    if ((j - begin + BLOCK) % FLUSH == 0) flush();
  }
  for (; j < end; ++j) add(j, 0);
  flush();
  Sums total;
  for (int64_t lane = 0; lane < LANES; ++lane) total.a += total_dd[lane], total.b += total_bb[lane];
  return total;
}

// Pass 2 (kernels.momentum_update): x <- (a/c) x - (η/c)(w_b b̃ + w_d d), storing b_t.
template <bool HasB, class P, class S>
Sums momentum_update_chunk(P* x, const P* g, S* b, const double* k, int64_t begin,
                           int64_t end) {
  using C = std::conditional_t<std::is_same_v<P, double>, double, float>;
  const Momentum<C> coefficients(k);
  const C decay = k[K_MOMENTUM_UPDATE_DECAY], momentum_step = k[K_MOMENTUM_UPDATE_MOMENTUM_STEP],
          grad_step = k[K_MOMENTUM_UPDATE_GRAD_STEP];
  blocked(
      begin, end,
      [&](int64_t j) {
        prefetch(x, j), prefetch(g, j);
        if constexpr (HasB) prefetch(b, j);
      },
      [&](int64_t j) {
        const C xj = load<C>(x, j);
        C d, b_t, b_tilde;
        coefficients.template direction<true, HasB>(x, g, b, j, d, b_t, b_tilde);
        if constexpr (HasB) store(b, j, b_t);
        store(x, j, decay * xj + momentum_step * b_tilde + grad_step * d);
      });
  return {};
}

// Pointer arrays (one entry per tensor; a null array: that input is absent) and the
// coefficient rows: tensor i uses k + i * k_stride (k_stride = 0: one row for all; the rows
// of Generalized SignSGD with bias correction differ by their step counts).
struct Args {
  int64_t n;
  void* const* x;
  void* const* g;
  void* const* s0;
  void* const* s1;
  const int64_t* numel;
  const double* k;
  int64_t k_stride;
  int threads;
  int flags;
};

template <class T>
T* at(void* const* array, int64_t i) {
  return array == nullptr ? nullptr : static_cast<T*>(array[i]);
}

// One kernel over every chunk of every tensor. s0, s1: the state tensors (exp_avg,
// exp_avg_sq, or the momentum buffer).
template <int Kernel, class P, class S>
Sums run(const Args& a) {
  return for_chunks(a.n, a.numel, a.threads, [&](int64_t i, int64_t begin, int64_t end) {
    P* x = at<P>(a.x, i);
    const P* g = at<P>(a.g, i);
    S* s0 = at<S>(a.s0, i);
    S* s1 = at<S>(a.s1, i);
    const double* k = a.k + i * a.k_stride;
    if constexpr (Kernel == KERNEL_GSIGNSGD) {
      const bool square = (a.flags & FLAG_SQUARE_GRADIENT) != 0;
      if (s1 == nullptr)
        return square ? gsignsgd_chunk<P, S, false, true>(x, g, s0, s1, k, begin, end)
                      : gsignsgd_chunk<P, S, false, false>(x, g, s0, s1, k, begin, end);
      return square ? gsignsgd_chunk<P, S, true, true>(x, g, s0, s1, k, begin, end)
                    : gsignsgd_chunk<P, S, true, false>(x, g, s0, s1, k, begin, end);
    } else if constexpr (Kernel == KERNEL_LION) {
      return lion_chunk<P, S>(x, g, s0, k, begin, end);
    } else if constexpr (Kernel == KERNEL_MOMENTUM_SUMS) {
      if (x == nullptr)
        return s0 ? momentum_sums_chunk<false, true>(x, g, s0, k, begin, end)
                  : momentum_sums_chunk<false, false>(x, g, s0, k, begin, end);
      return s0 ? momentum_sums_chunk<true, true>(x, g, s0, k, begin, end)
                : momentum_sums_chunk<true, false>(x, g, s0, k, begin, end);
    } else {
      static_assert(Kernel == KERNEL_MOMENTUM_UPDATE, "a kernel without a body");
      return s0 ? momentum_update_chunk<true>(x, g, s0, k, begin, end)
                : momentum_update_chunk<false>(x, g, s0, k, begin, end);
    }
  });
}

// The kernel's instantiation for the parameter and state types. The ids are checked by
// adaptopt_fused_step before: no case falls through to another kernel.
template <class P, class S>
Sums run_kernel(int kernel, const Args& a) {
  switch (kernel) {
    case KERNEL_GSIGNSGD: return run<KERNEL_GSIGNSGD, P, S>(a);
    case KERNEL_LION: return run<KERNEL_LION, P, S>(a);
    case KERNEL_MOMENTUM_SUMS: return run<KERNEL_MOMENTUM_SUMS, P, S>(a);
    case KERNEL_MOMENTUM_UPDATE: return run<KERNEL_MOMENTUM_UPDATE, P, S>(a);
  }
  __builtin_unreachable();
}

template <class P>
Sums run_state(int state_dtype, int kernel, const Args& a) {
  switch (state_dtype) {
    case DTYPE_FLOAT32: return run_kernel<P, float>(kernel, a);
    case DTYPE_FLOAT64: return run_kernel<P, double>(kernel, a);
    case DTYPE_BFLOAT16: return run_kernel<P, bf16>(kernel, a);
    case DTYPE_FLOAT16: return run_kernel<P, f16>(kernel, a);
  }
  __builtin_unreachable();
}

bool known_dtype(int code) {
  return code == DTYPE_FLOAT32 || code == DTYPE_FLOAT64 || code == DTYPE_BFLOAT16 ||
         code == DTYPE_FLOAT16;
}

// The inputs each kernel needs and accepts (the Python side passes null for absent ones).
int check(int kernel, int flags, const Args& a, void* const* steps, const double* sums) {
  const bool gsignsgd = kernel == KERNEL_GSIGNSGD, sums_kernel = kernel == KERNEL_MOMENTUM_SUMS;
  if (!gsignsgd && kernel != KERNEL_LION && !sums_kernel && kernel != KERNEL_MOMENTUM_UPDATE)
    return STATUS_UNKNOWN_KERNEL;
  const int known_flags = gsignsgd ? FLAG_SQUARE_GRADIENT | FLAG_BIAS_CORRECTION : 0;
  const bool needs_s0 = gsignsgd || kernel == KERNEL_LION;
  const bool valid = a.n >= 0 && a.threads >= 1 && a.k != nullptr && a.numel != nullptr &&
                     a.g != nullptr && (a.x != nullptr || sums_kernel) &&
                     (a.s0 != nullptr || !needs_s0) && (a.s1 == nullptr || gsignsgd) &&
                     (steps != nullptr) == gsignsgd && (sums != nullptr) == sums_kernel &&
                     (flags & ~known_flags) == 0;
  return valid ? STATUS_OK : STATUS_INVALID_ARGUMENTS;
}

template <class H>
void convert(int to_float, const void* in, void* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (to_float)
      static_cast<float*>(out)[i] = load<float>(static_cast<const H*>(in), i);
    else
      store(static_cast<H*>(out), i, static_cast<const float*>(in)[i]);
  }
}

}  // namespace

// Runs kernel (a KERNEL_* id; flags: FLAG_* bits) over n tensors whose elements are
// param_dtype (x, g) and state_dtype (s0, s1), DTYPE_* codes, with the coefficient row k
// (layout.py; numel[i] elements in tensor i; null arrays for absent inputs; x is absent
// when momentum_sums does not read it, s1 without a second moment). Generalized SignSGD also
// increments each tensor's step counter (steps[i]: a float64 scalar) once, then computes its
// bias corrections from it (FLAG_BIAS_CORRECTION) into the inv_sqrt_bc2 and step_size
// entries of its coefficient row. momentum_sums writes (Σd², Σb̃²) to sums[0..1]. Returns
// STATUS_OK, or the STATUS_* code of the first check that failed (nothing is written then).
extern "C" int adaptopt_fused_step(int kernel, int flags, int param_dtype, int state_dtype,
                                   int64_t n, void* const* x, void* const* g, void* const* s0,
                                   void* const* s1, void* const* steps, const int64_t* numel,
                                   const double* k, int threads, double* sums) {
  Args a{n, x, g, s0, s1, numel, k, 0, threads, flags};
  const int status = check(kernel, flags, a, steps, sums);
  if (status != STATUS_OK) return status;
  if (!known_dtype(param_dtype) || !known_dtype(state_dtype)) return STATUS_UNSUPPORTED_DTYPE;
  std::vector<double> rows;  // per-tensor rows with the bias corrections of each step count
  if (steps != nullptr) {
    const bool correct = (flags & FLAG_BIAS_CORRECTION) != 0;
    if (correct) rows.resize(n * KSIZE_GSIGNSGD);
    for (int64_t i = 0; i < n; ++i) {
      const double t = *static_cast<double*>(steps[i]) += 1.0;
      if (!correct) continue;
      double* row = rows.data() + i * KSIZE_GSIGNSGD;
      std::copy(k, k + KSIZE_GSIGNSGD, row);
      row[K_GSIGNSGD_INV_SQRT_BC2] = 1.0 / std::sqrt(1.0 - std::pow(row[K_GSIGNSGD_BETA2], t));
      row[K_GSIGNSGD_STEP_SIZE] /= 1.0 - std::pow(row[K_GSIGNSGD_BETA1], t);
    }
    if (correct) a.k = rows.data(), a.k_stride = KSIZE_GSIGNSGD;
  }
  Sums s;
  switch (param_dtype) {
    case DTYPE_FLOAT32: s = run_state<float>(state_dtype, kernel, a); break;
    case DTYPE_FLOAT64: s = run_state<double>(state_dtype, kernel, a); break;
    case DTYPE_BFLOAT16: s = run_state<bf16>(state_dtype, kernel, a); break;
    case DTYPE_FLOAT16: s = run_state<f16>(state_dtype, kernel, a); break;
  }
  if (sums != nullptr) sums[0] = s.a, sums[1] = s.b;
  return STATUS_OK;
}

// The ABI key this library was built for (layout.abi_key: native.cpp and the -D flags), so
// that a stale build is never called with another layout.
extern "C" const char* adaptopt_fused_abi() { return ADAPTOPT_FUSED_ABI; }

// The kernels' conversions between float32 and a 16-bit dtype (DTYPE_BFLOAT16 or
// DTYPE_FLOAT16), for tests: n elements of in (16-bit when to_float, else float32) to out.
// Returns STATUS_OK, or STATUS_UNSUPPORTED_DTYPE (nothing written).
extern "C" int adaptopt_fused_convert(int dtype, int to_float, const void* in, void* out,
                                      int64_t n) {
  if (dtype != DTYPE_BFLOAT16 && dtype != DTYPE_FLOAT16) return STATUS_UNSUPPORTED_DTYPE;
  if (dtype == DTYPE_BFLOAT16)
    convert<bf16>(to_float, in, out, n);
  else
    convert<f16>(to_float, in, out, n);
  return STATUS_OK;
}

// Whether this CPU and OS run AVX2 and FMA instructions: native.py then loads the build of
// this file with them (setup.py builds both on x86-64; the wheel's baseline is x86-64).
extern "C" int adaptopt_fused_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}
