// attention_amx_bf16.cpp: bf16 prefill on AMX tiles (Intel Sapphire Rapids+): S^T = K Q^T and
// O^T += V^T P^T as tile multiplies (tdpbf16ps: exact bf16 products, fp32 accumulators), the
// softmax in AVX-512 (prefill_lanes.inl). P is rounded to bf16 before P.V.
//
// Tiles: every tile is 16 rows x 64 bytes (16 x 32 bf16, or 16 x 16 fp32). A 2 x 2 block of
// accumulators (tmm0-3) takes two A tiles (tmm4-5) and two B tiles (tmm6-7).
//   scores: C = S^T[16 keys][16 lanes], A = K[16 keys][32 dims], B = Q pairs[16 dim pairs][16 lanes]
//   P.V:    C = O^T[16 dims][16 lanes], A = V^T[16 dims][32 keys], B = P pairs[16 key pairs][16 lanes]
// Compiled with AMX + AVX-512 BF16 flags (cmake/GqaCpuIsa.cmake); called only after CPUID and the
// OS's grant of AMX state (isa.cpp).
#include "cpu/simd_avx512.hpp"
#include "cpu/prefill_bf16.inl"

namespace gqa {
namespace cpu {
namespace {

struct alignas(64) TileConfig {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
};

// A 2 x 2 (or smaller) block of C tiles: C(i, j) = sum_s A_i(s) B_j(s), each operand tile
// loaded from base + step * s with its own row stride. Two = whether a second A / B exists.
template <bool TwoA, bool TwoB>
inline void tile_block(const void* a0, const void* a1, int64_t a_stride, int64_t a_step, const void* b0,
                       const void* b1, int64_t b_stride, int64_t b_step, int64_t steps) {
    const char* pa0 = static_cast<const char*>(a0);
    const char* pa1 = static_cast<const char*>(a1);
    const char* pb0 = static_cast<const char*>(b0);
    const char* pb1 = static_cast<const char*>(b1);
    for (int64_t s = 0; s < steps; ++s) {
        _tile_loadd(4, pa0 + s * a_step, a_stride);
        _tile_loadd(6, pb0 + s * b_step, b_stride);
        _tile_dpbf16ps(0, 4, 6);
        if constexpr (TwoB) {
            _tile_loadd(7, pb1 + s * b_step, b_stride);
            _tile_dpbf16ps(1, 4, 7);
        }
        if constexpr (TwoA) {
            _tile_loadd(5, pa1 + s * a_step, a_stride);
            _tile_dpbf16ps(2, 5, 6);
            if constexpr (TwoB) _tile_dpbf16ps(3, 5, 7);
        }
    }
}

// C tiles c(i, j) at c + i * c_down + j * 64 bytes (row stride c_stride): load (accumulate)
// or zero, run tile_block, store.
template <bool TwoA, bool TwoB>
inline void tile_product(float* c, int64_t c_stride, int64_t c_down, bool accumulate, const void* a0, int64_t a_stride,
                         int64_t a_down, int64_t a_step, const void* b0, int64_t b_stride, int64_t b_step,
                         int64_t steps) {
    char* c00 = reinterpret_cast<char*>(c);
    if (accumulate) {
        _tile_loadd(0, c00, c_stride);
        if constexpr (TwoB) _tile_loadd(1, c00 + 64, c_stride);
        if constexpr (TwoA) _tile_loadd(2, c00 + c_down, c_stride);
        if constexpr (TwoA && TwoB) _tile_loadd(3, c00 + c_down + 64, c_stride);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    tile_block<TwoA, TwoB>(a0, static_cast<const char*>(a0) + a_down, a_stride, a_step, b0,
                           static_cast<const char*>(b0) + 64, b_stride, b_step, steps);
    _tile_stored(0, c00, c_stride);
    if constexpr (TwoB) _tile_stored(1, c00 + 64, c_stride);
    if constexpr (TwoA) _tile_stored(2, c00 + c_down, c_stride);
    if constexpr (TwoA && TwoB) _tile_stored(3, c00 + c_down + 64, c_stride);
}

// Every C tile of an [a_tiles * 16][b_tiles * 16] fp32 result, in 2 x 2 blocks. The A operand
// of row tile i starts at a + i * a_down; the B operand of column tile j at b + j * 64 bytes.
inline void tile_matmul(float* c, int64_t c_stride, bool accumulate, int64_t a_tiles, const void* a, int64_t a_stride,
                        int64_t a_down, int64_t a_step, int64_t b_tiles, const void* b, int64_t b_stride,
                        int64_t b_step, int64_t steps) {
    const int64_t c_down = 16 * c_stride;
    for (int64_t i = 0; i < a_tiles; i += 2) {
        const void* ai = static_cast<const char*>(a) + i * a_down;
        for (int64_t j = 0; j < b_tiles; j += 2) {
            float* cij = reinterpret_cast<float*>(reinterpret_cast<char*>(c) + i * c_down + j * 64);
            const void* bj = static_cast<const char*>(b) + j * 64;
            const bool two_a = i + 1 < a_tiles, two_b = j + 1 < b_tiles;
            if (two_a && two_b) {
                tile_product<true, true>(cij, c_stride, c_down, accumulate, ai, a_stride, a_down, a_step, bj, b_stride, b_step, steps);
            } else if (two_a) {
                tile_product<true, false>(cij, c_stride, c_down, accumulate, ai, a_stride, a_down, a_step, bj, b_stride, b_step, steps);
            } else if (two_b) {
                tile_product<false, true>(cij, c_stride, c_down, accumulate, ai, a_stride, a_down, a_step, bj, b_stride, b_step, steps);
            } else {
                tile_product<false, false>(cij, c_stride, c_down, accumulate, ai, a_stride, a_down, a_step, bj, b_stride, b_step, steps);
            }
        }
    }
}

struct AmxMma : Bf16MmaBase {
    static constexpr int64_t kKeyGranule = 32;  // one tile step of P.V: 32 keys

    // The keys a pair of row tiles (B column tiles j, j + 1) may see.
    static int64_t pair_keys(const int32_t* vec_keys, int64_t j, int64_t b_tiles) {
        return j + 1 < b_tiles && vec_keys[j + 1] > vec_keys[j] ? vec_keys[j + 1] : vec_keys[j];
    }
    // S^T for the keys [0, round_up(keys, 16)) each pair of row tiles sees (keys past what a
    // lane sees are masked by the softmax, never read).
    static void scores(const float* qv, const uint16_t* kb, int64_t /*d_len*/, int64_t dp, int64_t rp,
                       const int32_t* vec_keys, float* st) {
        for (int64_t j = 0; j < rp / 16; j += 2) {
            const int64_t b_tiles = rp / 16 - j < 2 ? rp / 16 - j : 2;
            tile_matmul(st + j * 16, rp * 4, /*accumulate=*/false, (pair_keys(vec_keys, j, rp / 16) + 15) / 16, kb, dp * 2,
                        16 * dp * 2, 64, b_tiles, qv + j * 16, rp * 4, 16 * rp * 4, dp / 32);
        }
    }
    // O^T += V^T P^T over the 32-key steps each pair of row tiles needs (P is 0 past them).
    static void pv(const uint16_t* vt, int64_t /*d_len*/, int64_t dp, const void* pairs, int64_t rp,
                   const int32_t* vec_keys, float* ot) {
        for (int64_t j = 0; j < rp / 16; j += 2) {
            const int64_t b_tiles = rp / 16 - j < 2 ? rp / 16 - j : 2;
            const int64_t steps = (pair_keys(vec_keys, j, rp / 16) + 31) / 32;
            if (steps == 0) continue;
            tile_matmul(ot + j * 16, rp * 4, /*accumulate=*/true, dp / 16, vt, kPrefillKeyBlock * 2, 16 * kPrefillKeyBlock * 2,
                        64, b_tiles, static_cast<const float*>(pairs) + j * 16, rp * 4, 16 * rp * 4, steps);
        }
    }
    // Each tile kernel configures the tiles (the configuration is per thread) and releases them.
    static void begin() {
        TileConfig config;
        for (int i = 0; i < 8; ++i) {
            config.bytes_per_row[i] = 64;
            config.rows[i] = 16;
        }
        _tile_loadconfig(&config);
    }
    static void end() { _tile_release(); }
};

}  // namespace

void prefill_tile_amx_bf16(const Tile& t, float* scratch) { prefill_lanes<AmxMma>(t, scratch); }

}  // namespace cpu
}  // namespace gqa
