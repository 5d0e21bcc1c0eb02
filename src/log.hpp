// log.hpp: leveled logging to a user callback (or stderr). Never stdout.
#pragma once

#include <cstdint>

namespace gqa {

bool log_enabled(int32_t level);
// printf-style; formats only when the level is enabled (check log_enabled first in hot paths).
void log_message(int32_t level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace gqa

#define GQA_LOG(level, ...)                                 \
    do {                                                    \
        if (::gqa::log_enabled(level)) ::gqa::log_message(level, __VA_ARGS__); \
    } while (0)
