// test_config_growth.cpp: the growth rule's reader (src/config.hpp) on a config that has
// already grown once, as gqa_prefill_config and gqa_decode_config will: a caller of either
// published size is read with the fields it lacks at their defaults, an unknown size or ABI
// version is VERSION_MISMATCH naming it, and the initializer writes only the oldest size.
// Built with src/error.cpp: libgqa.so exports none of this.
#include <cstring>
#include <string>

#include "config.hpp"
#include "gqa_test.h"

namespace {

void check(bool ok, const std::string& what) { CHECK(ok, "%s", what.c_str()); }

// Version 1 ended after `a`; version 2 appended `b`, whose default (7) is what v1 callers get.
struct grown_config {
    uint32_t struct_size;
    uint32_t abi_version;
    int32_t a;
    int32_t b;
};
constexpr uint32_t kV1Size = offsetof(grown_config, b);

struct GrownSpec {
    static constexpr const char* name = "grown_config";
    static constexpr const char* initializer = "GROWN_CONFIG_INIT";
    static constexpr uint32_t published_sizes[] = {kV1Size, sizeof(grown_config)};
    static grown_config defaults() { return grown_config{sizeof(grown_config), GQA_ABI_VERSION, 1, 7}; }
};

// Reads a caller's config, or returns the failure's status and message.
gqa_status read(const void* caller, grown_config* full, std::string* message) {
    try {
        *full = gqa::read_config<grown_config, GrownSpec>(static_cast<const grown_config*>(caller));
        return GQA_STATUS_OK;
    } catch (const gqa::Error& e) {
        *message = e.what();
        return e.status();
    }
}

void v1_caller_gets_defaults() {
    // A v1 caller's struct is kV1Size bytes; poison what follows so that a read past it shows.
    alignas(grown_config) unsigned char bytes[sizeof(grown_config) + 16];
    std::memset(bytes, 0xEE, sizeof bytes);
    const uint32_t header[3] = {kV1Size, GQA_ABI_VERSION, 42};
    std::memcpy(bytes, header, sizeof header);
    grown_config full{};
    std::string message;
    check(read(bytes, &full, &message) == GQA_STATUS_OK, "v1 size rejected: " + message);
    check(full.a == 42, "v1 caller's field a lost");
    check(full.b == 7, "v1 caller's missing field b is " + std::to_string(full.b) + ", not its default 7");
}

void v2_caller_keeps_its_fields() {
    const grown_config caller{sizeof(grown_config), GQA_ABI_VERSION, 3, 9};
    grown_config full{};
    std::string message;
    check(read(&caller, &full, &message) == GQA_STATUS_OK, "v2 size rejected: " + message);
    check(full.a == 3 && full.b == 9, "v2 caller's fields changed");
}

void unknown_size_and_abi_rejected() {
    for (uint32_t size : {0u, 4u, kV1Size - 4, kV1Size + 2, uint32_t(sizeof(grown_config) + 8)}) {
        const grown_config caller{size, GQA_ABI_VERSION, 3, 9};
        grown_config full{};
        std::string message;
        const gqa_status status = read(&caller, &full, &message);
        const std::string given = "struct_size (" + std::to_string(size) + ")";
        const std::string known = "(" + std::to_string(kV1Size) + ", " + std::to_string(sizeof(grown_config)) + ")";
        check(status == GQA_STATUS_VERSION_MISMATCH, "size " + std::to_string(size) + " accepted");
        check(message.find(given) != std::string::npos && message.find(known) != std::string::npos &&
                  message.find("grown_config") != std::string::npos,
              "size " + std::to_string(size) + ": message '" + message + "' lacks " + given + " or " + known);
    }
    const grown_config caller{kV1Size, GQA_ABI_VERSION + 1, 3, 9};
    grown_config full{};
    std::string message;
    check(read(&caller, &full, &message) == GQA_STATUS_VERSION_MISMATCH &&
              message.find("abi_version (2)") != std::string::npos,
          "abi_version 2 not rejected by name: " + message);
    check(read(nullptr, &full, &message) == GQA_STATUS_INVALID_ARGUMENT && message == "config is NULL",
          "NULL config: " + message);
}

void initializer_writes_oldest_size_only() {
    alignas(grown_config) unsigned char bytes[sizeof(grown_config)];
    std::memset(bytes, 0xEE, sizeof bytes);
    gqa::init_config<grown_config, GrownSpec>(reinterpret_cast<grown_config*>(bytes));
    uint32_t size = 0;
    int32_t a = 0;
    std::memcpy(&size, bytes, 4);
    std::memcpy(&a, bytes + offsetof(grown_config, a), 4);
    check(size == kV1Size && a == 1, "initializer did not write the v1 defaults");
    bool untouched = true;
    for (size_t i = kV1Size; i < sizeof bytes; ++i) untouched &= bytes[i] == 0xEE;
    check(untouched, "initializer wrote past the oldest published size");
    // ... and what it wrote reads back as a full config with every default.
    grown_config full{};
    std::string message;
    check(read(bytes, &full, &message) == GQA_STATUS_OK && full.a == 1 && full.b == 7,
          "initialized config does not read back as the defaults: " + message);
}

}  // namespace

int main() {
    v1_caller_gets_defaults();
    v2_caller_keeps_its_fields();
    unknown_size_and_abi_rejected();
    initializer_writes_oldest_size_only();
    return test_summary("test_config_growth");
}
