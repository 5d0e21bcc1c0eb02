// emu_tensor_core.hpp: the sm_80 warp primitives of cuda/tensor_core.cuh on the CPU (included
// by emu.hpp). Each lane posts its fragment or row address, then computes its own result by the
// PTX ISA's fragment layouts. A cp.async poisons its 16-byte destination when issued and copies
// at the cp.async.wait_group that covers it (the earliest and the latest time the hardware may
// write); emu_smem.hpp checks who touches the destination in between.
#pragma once

namespace emu {
inline void check_smem(const void* p, size_t bytes, const char* what) {
    const auto* c = static_cast<const unsigned char*>(p);
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) die(what);
    if (c < dynamic_smem || c + bytes > dynamic_smem + dynamic_smem_bytes) die(what);
}
template <typename T>
float to_float(uint16_t bits) {
    if constexpr (std::is_same<T, __half>::value) {
        __half_raw raw;
        raw.x = bits;
        return __half2float(__half(raw));
    } else {
        const uint32_t u = uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
}
inline uint16_t half_of(uint32_t reg, int which) { return uint16_t(which ? reg >> 16 : reg & 0xffffu); }

struct PendingCopy {
    void* dst;
    const void* src;
    bool valid;
    int group;  // commit group the copy belongs to
};
// Inline (one definition in every translation unit), not extern: UBSan's null check misfires on
// GCC's wrapper for an extern thread_local of another translation unit.
inline thread_local std::vector<PendingCopy> pending_copies;
inline thread_local int committed_groups = 0;
}  // namespace emu

namespace gqa {
namespace gpu {
inline unsigned char* dynamic_smem() { return emu::dynamic_smem; }

template <typename T>
void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    const int w = emu::warp_id(), lane = emu::lane_id();
    for (int i = 0; i < 4; ++i) emu::fragments[w][lane][i] = a[i];
    emu::fragments[w][lane][4] = b0;
    emu::fragments[w][lane][5] = b1;
    emu::warp_sync();
    const int group = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; ++e) {
        const int row = group + 8 * (e / 2), col = 2 * t + (e & 1);
        double acc = 0.0;
        for (int k = 0; k < 16; ++k) {
            const uint32_t areg = emu::fragments[w][(row % 8) * 4 + (k % 8) / 2][(row / 8) + 2 * (k / 8)];
            const uint32_t breg = emu::fragments[w][col * 4 + (k % 8) / 2][4 + k / 8];
            acc += double(emu::to_float<T>(emu::half_of(areg, k % 2))) *
                   double(emu::to_float<T>(emu::half_of(breg, k % 2)));
        }
        d[e] = float(double(d[e]) + acc);
    }
    emu::warp_sync();  // nobody overwrites the fragments before everyone has read
}

// ldmatrix .x4 (and .trans): see tensor_core.cuh for which lane gets which elements.
inline void ldmatrix_x4_impl(uint32_t (&r)[4], const void* row, bool trans) {
    emu::check_smem(row, 16, "ldmatrix: row address not 16-byte aligned or outside shared memory");
    emu::note_smem_read(row);
    const int w = emu::warp_id(), lane = emu::lane_id();
    emu::row_address[w][lane] = row;
    emu::warp_sync();
    for (int j = 0; j < 4; ++j) {
        uint16_t e[2];
        for (int h = 0; h < 2; ++h) {
            const int r8 = trans ? 2 * (lane % 4) + h : lane / 4;  // row of matrix j
            const int c8 = trans ? lane / 4 : 2 * (lane % 4) + h;  // column
            std::memcpy(&e[h], static_cast<const uint16_t*>(emu::row_address[w][8 * j + r8]) + c8, 2);
        }
        r[j] = uint32_t(e[0]) | (uint32_t(e[1]) << 16);
    }
    emu::warp_sync();
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { ldmatrix_x4_impl(r, row, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { ldmatrix_x4_impl(r, row, true); }

inline void cp_async_16(void* dst, const void* src, bool valid) {
    emu::check_smem(dst, 16, "cp.async: destination not 16-byte aligned or outside shared memory");
    if (valid && reinterpret_cast<uintptr_t>(src) % 16 != 0) emu::die("cp.async: source not 16-byte aligned");
    emu::note_cp_async_issue(dst);
    // The hardware may write the destination at any time until the wait: poison it now, so that
    // a read too early (or by another thread before the next barrier) sees NaN, not old bytes.
    std::memset(dst, 0xff, 16);
    emu::pending_copies.push_back({dst, src, valid, emu::committed_groups});
}
inline void cp_async_commit() { ++emu::committed_groups; }
template <int N>
void cp_async_wait() {
    // Completes every copy of the groups older than the newest N; later ones stay pending.
    auto& q = emu::pending_copies;
    size_t kept = 0;
    for (size_t i = 0; i < q.size(); ++i) {
        if (q[i].group < emu::committed_groups - N) {
            if (q[i].valid) std::memcpy(q[i].dst, q[i].src, 16);
            else std::memset(q[i].dst, 0, 16);
            emu::note_cp_async_landed(q[i].dst);
        } else {
            q[kept++] = q[i];
        }
    }
    q.resize(kept);
}
}  // namespace gpu
}  // namespace gqa

