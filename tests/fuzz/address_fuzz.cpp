// libFuzzer entry point for the envelope address parser (src/smtp/address.hpp).
// Not built by CMake.  Build and run from the repository root:
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
//       -Isrc tests/fuzz/address_fuzz.cpp src/smtp/address.cpp -o /tmp/address_fuzz
//   mkdir -p /tmp/address_corpus && /tmp/address_fuzz -max_total_time=60 /tmp/address_corpus
//
// Input: byte 0 holds the PathOptions bits, the rest is the text after
// "MAIL FROM:" / "RCPT TO:".  Besides the sanitizers, parse_path must keep
// these promises:
//   - rest is a suffix of the input with no leading space;
//   - an accepted mailbox fits the 256-octet path, is valid UTF-8, is
//     non_ascii exactly when it holds a byte >= 0x80, and is empty only for
//     an allowed "<>";
//   - needs_smtputf8 exactly when SMTPUTF8 was not given and the path has a
//     byte >= 0x80 (in the mailbox, or in a source route that is then dropped);
//   - parsing "<" + mailbox + ">" again gives the same mailbox (the source
//     route, if any, is gone and stays gone);
//   - a domain valid as ASCII is valid with UTF-8 allowed, and fits 255 octets.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "smtp/address.hpp"

namespace {

using mxgate::smtp::AddressError;
using mxgate::smtp::ParsedPath;
using mxgate::smtp::PathOptions;

[[noreturn]] void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "address_fuzz invariant broken: %s\n  %.*s\n", what,
               static_cast<int>(detail.size() > 400 ? 400 : detail.size()), detail.data());
  std::abort();
}

void check(std::string_view text, const PathOptions& options) {
  const ParsedPath p = mxgate::smtp::parse_path(text, options);
  if (!p.rest.empty()) {
    if (p.rest.data() < text.data() || p.rest.data() + p.rest.size() != text.data() + text.size())
      fail("rest is not a suffix of the input", text);
    if (p.rest.front() == ' ') fail("rest starts with a space", text);
  }
  if (p.error == AddressError::syntax) return;

  const auto has_high = [](std::string_view s) {
    for (const unsigned char c : s)
      if (c >= 0x80) return true;
    return false;
  };
  const std::string_view path = text.substr(0, text.size() - p.rest.size());
  if (has_high(p.mailbox) != p.non_ascii) fail("non_ascii disagrees with the mailbox", text);
  if (p.mailbox.size() + 2 > 256) fail("mailbox longer than a path", text);
  if (!mxgate::smtp::is_valid_utf8(p.mailbox)) fail("mailbox is not UTF-8", text);
  const bool needs = !options.utf8 && has_high(path);
  if ((p.error == AddressError::needs_smtputf8) != needs) fail("needs_smtputf8 is wrong", text);
  if (p.mailbox.empty()) {
    if (!options.allow_null || text.substr(0, 2) != "<>") fail("empty mailbox not from <>", text);
    return;
  }
  const std::string again = "<" + p.mailbox + ">";
  const ParsedPath q = mxgate::smtp::parse_path(again, options);
  const AddressError want = !options.utf8 && p.non_ascii ? AddressError::needs_smtputf8 : AddressError::none;
  if (q.error != want || q.mailbox != p.mailbox || q.non_ascii != p.non_ascii || !q.rest.empty())
    fail("re-parsing the accepted mailbox differs", text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t bits = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const PathOptions options{
      .allow_null = (bits & 1) != 0, .allow_postmaster = (bits & 2) != 0, .utf8 = (bits & 4) != 0};
  check(text, options);
  // Also as a bracketed path, so the fuzzer need not find '<' and '>' itself.
  if (bits & 8) check("<" + std::string(text) + ">", options);

  const bool ascii_domain = mxgate::smtp::is_valid_domain(text, false);
  const bool utf8_domain = mxgate::smtp::is_valid_domain(text, true);
  if (ascii_domain && !utf8_domain) fail("ASCII domain rejected with UTF-8 allowed", text);
  if (utf8_domain && text.size() > 255) fail("domain over 255 octets", text);
  if (mxgate::smtp::is_valid_address_literal(text) && (text.front() != '[' || text.back() != ']'))
    fail("address literal without brackets", text);
  (void)mxgate::smtp::is_valid_utf8(text);
  return 0;
}
