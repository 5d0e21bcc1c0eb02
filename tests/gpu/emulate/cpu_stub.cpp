// cpu_stub.cpp: the emulator links the API layer without the CPU backend (it tests CUDA paths).
#include "backend.hpp"
#include "error.hpp"
#include "merge.hpp"

namespace gqa {
void cpu_attention(const Problem&) {
    throw Error(GQA_STATUS_INTERNAL_ERROR, "the CUDA emulator has no CPU backend");
}
int32_t cpu_num_threads() { return 1; }
void cpu_set_num_threads(int32_t) {}
void cpu_merge_states(const MergeProblem&) {
    throw Error(GQA_STATUS_INTERNAL_ERROR, "the CUDA emulator has no CPU backend");
}
}  // namespace gqa
