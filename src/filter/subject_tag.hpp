// The optional subject tag of the `tag` action ([filter] subject_tag, e.g.
// "[SPAM]"): the visible mark SpamAssassin's rewrite_header Subject gives
// tagged mail, for mail clients without rules on X-Spam-Flag.
#pragma once

#include <string>
#include <string_view>

namespace mxgate::filter {

// content with tag and a space put in front of the first Subject field's
// value (folded or not); a Subject field is added at the end of the header
// block when there is none; unchanged when the value already starts with
// tag or tag is empty.  Pure.
std::string tag_subject(std::string_view content, std::string_view tag);

}  // namespace mxgate::filter
