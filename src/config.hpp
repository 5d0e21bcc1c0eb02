// config.hpp: the growth rule of the config structs (gqa.h), in one place.
//
// A config is read by its struct_size. Every size libgqa ever published for a struct is
// accepted: the caller's bytes are copied over a full-size config holding the defaults, so
// the fields a caller's gqa.h does not have keep their defaults. Any other size is
// GQA_STATUS_VERSION_MISMATCH, read no further than struct_size itself.
//
// To append a field to a config (abi/README.md): add it at the end of the struct in gqa.h
// and its default at the end of the GQA_*_CONFIG_INIT macro (the one list of defaults; it
// must be what an older caller gets today), append the new sizeof to its line of the table below,
// bump GQA_VERSION_MINOR. GQA_ABI_VERSION stays.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>

#include "error.hpp"
#include "gqa.h"

namespace gqa {

// What the growth rule knows of a config struct: its name and initializer macro (for
// messages), every struct_size it was published with (oldest first; LP64 sizes) and its
// defaults (the macro). One line per struct in the table below.
template <typename Config>
struct ConfigSpec;

#define GQA_CONFIG_SPEC(Config, INIT, ...)                                   \
    template <>                                                              \
    struct ConfigSpec<Config> {                                              \
        static constexpr const char* name = #Config;                         \
        static constexpr const char* initializer = #INIT;                    \
        static constexpr uint32_t published_sizes[] = {__VA_ARGS__};         \
        static Config defaults() {                                           \
            const Config c = INIT;                                           \
            return c;                                                        \
        }                                                                    \
    }

//              struct               initializer              published sizes: libgqa 0.1 (ABI 1), 0.2 (variants)
GQA_CONFIG_SPEC(gqa_prefill_config, GQA_PREFILL_CONFIG_INIT, 56, 184);
GQA_CONFIG_SPEC(gqa_decode_config,  GQA_DECODE_CONFIG_INIT,  72, 200);
GQA_CONFIG_SPEC(gqa_merge_config,   GQA_MERGE_CONFIG_INIT,   48);  // new in 0.2
GQA_CONFIG_SPEC(gqa_batch_config,   GQA_BATCH_CONFIG_INIT,   240);  // new in 0.2

#undef GQA_CONFIG_SPEC

namespace config_detail {

template <typename Spec>
bool is_published(uint32_t size) {
    for (uint32_t s : Spec::published_sizes)
        if (s == size) return true;
    return false;
}

template <typename Spec>
std::string published_list() {
    std::string list;
    for (uint32_t s : Spec::published_sizes) list += (list.empty() ? "" : ", ") + std::to_string(s);
    return list;
}

template <typename Spec>
void require_published(uint32_t size) {
    if (!is_published<Spec>(size)) {
        fail(GQA_STATUS_VERSION_MISMATCH,
             "config->struct_size (%u) is not a size of %s this libgqa knows (%s); initialise the "
             "config with %s_init_sized() or %s of a gqa.h no newer than this libgqa",
             size, Spec::name, published_list<Spec>().c_str(), Spec::name, Spec::initializer);
    }
}

}  // namespace config_detail

// The caller's config as a full-size struct: fields past its struct_size hold their defaults.
// Throws VERSION_MISMATCH for an unpublished struct_size or another abi_version.
template <typename Config, typename Spec = ConfigSpec<Config>>
Config read_config(const Config* caller) {
    static_assert(Spec::published_sizes[std::size(Spec::published_sizes) - 1] == sizeof(Config),
                  "the newest published size must be sizeof(Config): append it to published_sizes");
    static_assert(offsetof(Config, struct_size) == 0 && offsetof(Config, abi_version) == 4,
                  "every config starts with struct_size and abi_version");
    if (!caller) fail(GQA_STATUS_INVALID_ARGUMENT, "config is NULL");
    uint32_t size = 0;
    std::memcpy(&size, caller, sizeof size);
    config_detail::require_published<Spec>(size);
    Config full = Spec::defaults();
    std::memcpy(static_cast<void*>(&full), caller, size);
    if (full.abi_version != GQA_ABI_VERSION) {
        fail(GQA_STATUS_VERSION_MISMATCH,
             "config->abi_version (%u) does not match this libgqa's ABI version (%d)",
             full.abi_version, GQA_ABI_VERSION);
    }
    return full;
}

// gqa_prefill_config_init() / gqa_decode_config_init() (the structs of ABI 1; the newer ones
// have only the sized form): the defaults, written over the oldest published size only, since
// the caller may have been built against the oldest gqa.h. Its struct_size says so; the fields
// appended since then keep their defaults when the config is read.
template <typename Config, typename Spec = ConfigSpec<Config>>
void init_config(Config* config) {
    if (!config) return;
    Config defaults = Spec::defaults();
    defaults.struct_size = Spec::published_sizes[0];
    std::memcpy(static_cast<void*>(config), &defaults, Spec::published_sizes[0]);
}

// gqa_*_config_init_sized(): the defaults over the caller's struct_size bytes (the sizeof of
// the caller's gqa.h), struct_size set to it. VERSION_MISMATCH, config untouched, for a size
// never published.
template <typename Config, typename Spec = ConfigSpec<Config>>
void init_config_sized(Config* config, uint32_t struct_size) {
    if (!config) fail(GQA_STATUS_INVALID_ARGUMENT, "config is NULL");
    config_detail::require_published<Spec>(struct_size);
    Config defaults = Spec::defaults();
    defaults.struct_size = struct_size;
    std::memcpy(static_cast<void*>(config), &defaults, struct_size);
}

}  // namespace gqa
