// Parses a message for the content checks with GMime (RFC 5322 header
// fields, RFC 2045-2047 MIME structure, transfer encodings and encoded
// words, RFC 2231 parameters): a well-kept Debian library that has met more
// broken real-world mail than any parser we would write.  What GMime does
// not bound, this does: the tree is walked without recursion and every limit
// below is checked as it is reached.  GMime's own parser stops nesting at
// 1024 levels, which bounds its recursion on hostile input.
#pragma once

#include <cstdint>
#include <string_view>

#include "filter/parsed_message.hpp"

namespace mxgate::filter {

struct MimeLimits {
  unsigned max_depth = 20;                      // multipart / message/rfc822 nesting
  std::size_t max_parts = 500;                  // leaf parts
  std::uint64_t max_decoded_bytes = 64u << 20;  // all parts' decoded data together
};

// Never fails: a message GMime cannot structure is one text part.  A limit
// reached is named in limit_exceeded and parsing stops there.
ParsedMessage parse_mime(std::string_view content, const MimeLimits& limits);

}  // namespace mxgate::filter
