// api_firewall.hpp: GQA_API_BEGIN / GQA_API_END, the exception firewall around every exported
// function that can fail (xgboost's API_BEGIN/API_END pattern): any exception becomes a
// gqa_status plus a gqa_last_error() sentence, so nothing ever crosses the C ABI.
#pragma once

#include <exception>
#include <new>

#include "error.hpp"
#include "gqa.h"
#include "log.hpp"

namespace gqa {

inline gqa_status record_failure(const char* function, gqa_status status, const char* message) {
    set_last_error(message);
    // Rejections are the caller's business (they get the status); runtime failures are ours.
    int32_t level = (status == GQA_STATUS_CUDA_ERROR || status == GQA_STATUS_INTERNAL_ERROR)
                        ? GQA_LOG_ERROR : GQA_LOG_DEBUG;
    GQA_LOG(level, "%s: %s: %s", function, status_string(status), message);
    return status;
}

}  // namespace gqa

#define GQA_API_BEGIN(function)      \
    const char* gqa_function_ = function; \
    try {                            \
        gqa::clear_last_error();
#define GQA_API_END()                                                                           \
    }                                                                                           \
    catch (const gqa::Error& e) {                                                               \
        return ::gqa::record_failure(gqa_function_, e.status(), e.what());                            \
    }                                                                                           \
    catch (const std::bad_alloc&) {                                                             \
        return ::gqa::record_failure(gqa_function_, GQA_STATUS_OUT_OF_MEMORY, "out of host memory");  \
    }                                                                                           \
    catch (const std::exception& e) {                                                           \
        return ::gqa::record_failure(gqa_function_, GQA_STATUS_INTERNAL_ERROR, e.what());             \
    }                                                                                           \
    catch (...) {                                                                               \
        return ::gqa::record_failure(gqa_function_, GQA_STATUS_INTERNAL_ERROR, "unknown exception");  \
    }                                                                                           \
    return GQA_STATUS_OK;
