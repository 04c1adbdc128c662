// Spam rules on the raw message and its parsed form.  For now the one rule
// every filter must honour: GTUBE, the Generic Test for Unsolicited Bulk
// Email (https://spamassassin.apache.org/gtube/), which scores as spam
// whatever else the message holds so operators can test their pipeline end
// to end.  The weighted rule set and the Bayesian classifier come next.
#pragma once

#include <string_view>

#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"

namespace mxgate::filter {

// SpamAssassin scores GTUBE 1000: far past any threshold.
inline constexpr double kGtubeScore = 1000.0;

Findings check_spam_rules(std::string_view content, const ParsedMessage& message);

}  // namespace mxgate::filter
