// Impersonation (business email compromise, spear-phishing): mail that
// claims to come from one of the operator's people or domains and does not.
//
// check_impersonation() reads the decoded From and Reply-To mailboxes and
// reports Category::impersonation findings; the category acts at a summed
// score of 1.0.
//
//   PROTECTED_NAME_EXTERNAL  1.0  From's display name is a protected name
//                                 while the From domain is neither a
//                                 protected domain nor a subdomain of one
//                                 ("Alice Martin <ceo.office@gmail.com>").
//   LOOKALIKE_FROM_DOMAIN    1.0  the From or a Reply-To domain is a
//                                 look-alike of a protected domain
//                                 (lookalike.hpp).
//   REPLY_TO_MISMATCH        0.3  a Reply-To is in another registrable domain
//                                 than From: weak alone, since mailing lists,
//                                 ticket systems and mass mailers do it.
//                            1.0  when the display name is a protected name
//                                 (the answer to "Alice" goes to someone else,
//                                 even when From is our own domain), or when
//                                 From is in a protected domain and the
//                                 Reply-To is a free-mail domain
//                                 (kFreeMailDomains in impersonation.cpp).
//
// Names are compared as a reader compares them: NFKC_Casefold, combining
// marks dropped, each word reduced to its UTS #39 confusable skeleton
// (lookalike.hpp), words split at anything that is not a letter, digit or
// mark.  A display name matches a protected name when the name's words occur
// in it as consecutive words, in order ("Alice Martin", "Alice Martin CEO")
// or with the last name first ("Martin, Alice"), except when the next word is
// "via" ("Alice Martin via DocuSign" is how e-signature and document-sharing
// services legitimately name a colleague).  A one-word protected name must be
// the whole display name.  Display names are cut at kMaxSkeletonInput bytes.
//
// Trusting the From domain here is only sound once the message passed DMARC:
// a From header forged in our own domain is the authentication checks'
// finding (DMARC failure on a protected domain, to come with them), not this
// check's.
#pragma once

#include "filter/finding.hpp"
#include "filter/parsed_message.hpp"
#include "filter/phishing.hpp"  // ContentPolicy

namespace mxgate::filter {

Findings check_impersonation(const ParsedMessage& message, const ContentPolicy& policy);

}  // namespace mxgate::filter
