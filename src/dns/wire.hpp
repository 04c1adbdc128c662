// RDATA parsers for the record types mxgate asks for, and domain-name text.
//
// libunbound hands over each RR's rdata in wire format with names
// uncompressed (RFC 3597 section 4 forbids compression in the rdata of new
// types, and libunbound decompresses MX itself), so the parsers refuse
// compression pointers.  Every parser checks the exact length: trailing or
// missing bytes are an error, never read past the span.
//
// Names come out in the form the rest of mxgate uses: lower case, without the
// trailing dot, the root as "" (the RFC 7505 null MX).  Bytes other than
// [a-z0-9_-] inside a label (including '.') are written as \DDD (RFC 1035
// section 5.1), so a hostile label cannot pass for a different name.
//
// Limits (RFC 1035 section 2.3.4): a label is at most 63 octets, a name at
// most 255 octets in wire form.
#pragma once

#include <asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "dns/resolver.hpp"
#include "util/result.hpp"

namespace mxgate::dns::wire {

using Bytes = std::span<const std::uint8_t>;

inline constexpr std::size_t kMaxLabelLength = 63;
inline constexpr std::size_t kMaxNameLength = 255;

// Reads one uncompressed wire-format name at rdata[offset]; on success offset
// is just past it.
Result<std::string> read_name(Bytes rdata, std::size_t& offset);

Result<MxRecord> parse_mx(Bytes rdata);             // preference(2) + name
Result<asio::ip::address> parse_a(Bytes rdata);     // exactly 4 octets
Result<asio::ip::address> parse_aaaa(Bytes rdata);  // exactly 16 octets
Result<TlsaRecord> parse_tlsa(Bytes rdata);         // usage, selector, mtype, >= 1 octet of data
// One TXT record's character-strings joined without separators, as SPF
// (RFC 7208 section 3.3) and DKIM (RFC 6376 section 3.6.2.2) read them.
// At least one string; each length octet must fit the rdata exactly.
Result<std::string> parse_txt(Bytes rdata);

// "Mx.Example.COM." -> "mx.example.com" (ASCII lower case, trailing dots removed).
std::string normalize_name(std::string_view name);

// "_<port>._tcp.<host>" (RFC 6698 section 3, RFC 7672 section 2.2.3).
std::string tlsa_owner(std::uint16_t port, std::string_view host);

}  // namespace mxgate::dns::wire
