// error.hpp: the status-carrying exception used inside libgqa and the thread-local last error.
//
// Internal code throws gqa::Error; the firewall around every entry point (api_firewall.hpp,
// used by exports.cpp) turns it, or any other exception, into a gqa_status and a
// gqa_last_error() sentence. Nothing escapes.
#pragma once

#include <cstdarg>
#include <stdexcept>
#include <string>

#include "gqa.h"

namespace gqa {

class Error : public std::runtime_error {
public:
    Error(gqa_status status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    gqa_status status() const { return status_; }

private:
    gqa_status status_;
};

// printf-style message formatting.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Throw gqa::Error(status, formatted message).
[[noreturn]] void fail(gqa_status status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// The thread-local sentence behind gqa_last_error().
void set_last_error(const std::string& message);
void clear_last_error();
const char* last_error();

// gqa_status_string(): never NULL.
const char* status_string(gqa_status status);

}  // namespace gqa
