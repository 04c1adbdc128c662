// What `mxgate check FILE` prints: the verdict the gateway would reach on a
// message, and every finding and failure behind it (the detail that the
// SMTP reply deliberately leaves out).
#pragma once

#include <asio/awaitable.hpp>
#include <string>
#include <string_view>

#include "filter/scanner.hpp"

namespace mxgate::filter {

// Text: "verdict: <describe()>" then a line per finding and failure, and the
// Authentication-Results field when sender authentication ran.
// JSON: {"action", "scores": {...}, "triggered": [...], "findings":
// [{"category", "rule", "score", "detail"}], "failures": [{"check", "reason"}],
// "authentication_results": "..." or null}, on one line.
asio::awaitable<std::string> report(const Scanner& scanner, std::string_view content,
                                    const ScanContext& context, bool json);

}  // namespace mxgate::filter
