// cuda_unavailable.cpp: the CUDA backend of a build made without a CUDA compiler.
// Every CUDA request is answered with GQA_STATUS_DEVICE_UNAVAILABLE.
#include "backend.hpp"
#include "merge.hpp"

namespace gqa {

bool cuda_built() { return false; }
bool cuda_usable(std::string* why) {
    if (why) *why = "this libgqa was built without its CUDA backend (no CUDA compiler was found)";
    return false;
}
void cuda_check_supported(const Problem&) {
    std::string why;
    cuda_usable(&why);
    fail(GQA_STATUS_DEVICE_UNAVAILABLE, "device is GQA_DEVICE_CUDA but %s", why.c_str());
}
uint64_t cuda_workspace_bytes(const Problem&) { return 0; }
void cuda_attention(const Problem&) {
    throw Error(GQA_STATUS_DEVICE_UNAVAILABLE, "this libgqa was built without its CUDA backend");
}
void cuda_check_merge(const MergeProblem&) { cuda_check_supported(Problem{}); }
void cuda_merge_states(const MergeProblem&) { cuda_attention(Problem{}); }
void cuda_copy_to_host(void*, const void*, uint64_t, void*, const char*) {
    throw Error(GQA_STATUS_DEVICE_UNAVAILABLE, "this libgqa was built without its CUDA backend");
}

}  // namespace gqa
