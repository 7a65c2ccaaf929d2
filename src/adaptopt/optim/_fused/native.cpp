// Native CPU kernels of adaptopt's fused optimizer steps (adaptopt/optim/_fused/native.py).
//
// One call updates every tensor of a parameter group: the elements of all tensors are cut
// into chunks that one OpenMP parallel region shares out (on torch's OpenMP runtime, with
// torch.get_num_threads() threads), and each chunk is one pass over memory: x, g and the
// state are read once, the state and x written once. The loops are vectorized by the
// compiler and prefetch each stream PREFETCH_BYTES ahead (a step is memory-bound; on one
// out-of-cache tensor this measured 5-8% faster than without, see benchmarks/RESULTS.md).
//
// The arithmetic is the one of kernels.py (same coefficient vectors k: their layout is defined
// once in layout.py, and native.py passes each index as a constant K_<KERNEL>_<FIELD>), in
// float for float32/bfloat16/float16 parameters and double for float64 ones; parameters and
// state are rounded to their own dtype (codes in DTYPE) when stored. No torch headers: the
// system compiler builds the file once per machine (native.py caches the library).

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
using f16 = _Float16;

enum DTYPE { FLOAT32 = 0, FLOAT64 = 1, BFLOAT16 = 2, FLOAT16 = 3 };

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
        const C u = m_t / (denom == C(0) ? C(1) : denom);  // 0/0 := 0
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
        const C u = c > C(0) ? C(1) : (c < C(0) ? C(-1) : c);  // sign, NaN stays NaN
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
// coefficient rows: tensor i uses k + i * k_stride (k_stride = 0: one row for all).
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
};

template <class T>
T* at(void* const* array, int64_t i) {
  return array == nullptr ? nullptr : static_cast<T*>(array[i]);
}

template <class P, class S>
Sums run(int kernel, int variant, const Args& a) {
  return for_chunks(a.n, a.numel, a.threads, [&](int64_t i, int64_t begin, int64_t end) {
    P* x = at<P>(a.x, i);
    const P* g = at<P>(a.g, i);
    S* s0 = at<S>(a.s0, i);
    S* s1 = at<S>(a.s1, i);
    const double* k = a.k + i * a.k_stride;
    switch (kernel) {
      case 0:
        if (s1 == nullptr)
          return variant ? gsignsgd_chunk<P, S, false, true>(x, g, s0, s1, k, begin, end)
                         : gsignsgd_chunk<P, S, false, false>(x, g, s0, s1, k, begin, end);
        return variant ? gsignsgd_chunk<P, S, true, true>(x, g, s0, s1, k, begin, end)
                       : gsignsgd_chunk<P, S, true, false>(x, g, s0, s1, k, begin, end);
      case 1:
        return lion_chunk<P, S>(x, g, s0, k, begin, end);
      case 2:
        if (x == nullptr)
          return s0 ? momentum_sums_chunk<false, true>(x, g, s0, k, begin, end)
                    : momentum_sums_chunk<false, false>(x, g, s0, k, begin, end);
        return s0 ? momentum_sums_chunk<true, true>(x, g, s0, k, begin, end)
                  : momentum_sums_chunk<true, false>(x, g, s0, k, begin, end);
      default:
        return s0 ? momentum_update_chunk<true>(x, g, s0, k, begin, end)
                  : momentum_update_chunk<false>(x, g, s0, k, begin, end);
    }
  });
}

template <class P>
int dispatch_state(int state_dtype, int kernel, int variant, const Args& a, double* sums) {
  Sums s;
  switch (state_dtype) {
    case FLOAT32: s = run<P, float>(kernel, variant, a); break;
    case FLOAT64: s = run<P, double>(kernel, variant, a); break;
    case BFLOAT16: s = run<P, bf16>(kernel, variant, a); break;
    case FLOAT16: s = run<P, f16>(kernel, variant, a); break;
    default: return 1;
  }
  if (sums != nullptr) sums[0] = s.a, sums[1] = s.b;
  return 0;
}

}  // namespace

// kernel: 0 gsignsgd (variant 1: square the gradient, i.e. Adam), 1 lion, 2 momentum_sums
// (writes sums[0..1]), 3 momentum_update. s0, s1: the state tensors (exp_avg, exp_avg_sq or
// the momentum buffer). Returns 0, or 1 for an unsupported dtype code.
extern "C" int adaptopt_fused_step(int kernel, int variant, int param_dtype, int state_dtype,
                                   int64_t n, void* const* x, void* const* g, void* const* s0,
                                   void* const* s1, const int64_t* numel, const double* k,
                                   int64_t k_stride, int threads, double* sums) {
  const Args a{n, x, g, s0, s1, numel, k, k_stride, threads};
  switch (param_dtype) {
    case FLOAT32: return dispatch_state<float>(state_dtype, kernel, variant, a, sums);
    case FLOAT64: return dispatch_state<double>(state_dtype, kernel, variant, a, sums);
    case BFLOAT16: return dispatch_state<bf16>(state_dtype, kernel, variant, a, sums);
    case FLOAT16: return dispatch_state<f16>(state_dtype, kernel, variant, a, sums);
    default: return 1;
  }
}
