// The Bayesian classifier (src/filter/bayes.hpp): the tokenizer's rules and
// every limit at the limit and one past it, the message key, the SQLite
// store (round trip, idempotent learning, read-only, damaged and foreign
// files), and classification of two clearly separable synthetic corpora.
#include "filter/bayes.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "filter/mime_parser.hpp"
#include "temp_dir.hpp"

namespace mxgate::filter {
namespace {

using test_support::TempDir;

bool has(const std::vector<std::string>& tokens, std::string_view token) {
  return std::find(tokens.begin(), tokens.end(), token) != tokens.end();
}

ParsedMessage text_message(std::string text) {
  ParsedMessage m;
  m.text = std::move(text);
  return m;
}

std::vector<std::string> body_tokens(std::string text) {
  return bayes_tokens("", text_message(std::move(text)));
}

std::vector<std::string> tokens_of(const std::string& content) {
  return bayes_tokens(content, parse_mime(content, MimeLimits{}));
}

std::string message(std::string_view subject, std::string_view body, std::string_view id = "") {
  std::string m =
      "From: Sender <sender@example.test>\r\nTo: rcpt@example.test\r\nSubject: " + std::string(subject) +
      "\r\n";
  if (!id.empty()) m += "Message-ID: " + std::string(id) + "\r\n";
  m += "\r\n" + std::string(body) + "\r\n";
  return m;
}

// ---------------------------------------------------------------- hashing

TEST(BayesHashTest, SipHashReferenceVectors) {
  // SipHash-2-4 with key 00..0f on the inputs 00, 00 01, ...: the paper's
  // vectors[0], [8] and [15] (little-endian output read as an integer).
  std::string input;
  EXPECT_EQ(bayes_token_hash(input), 0x726fdb47dd0e0e31ULL);
  for (int i = 0; i < 8; ++i) input += static_cast<char>(i);
  EXPECT_EQ(bayes_token_hash(input), 0x93f5f5799a932462ULL);
  for (int i = 8; i < 15; ++i) input += static_cast<char>(i);
  EXPECT_EQ(bayes_token_hash(input), 0xa129ca6149be45e5ULL);
  EXPECT_NE(bayes_token_hash("viagra"), bayes_token_hash("s:viagra"));
}

TEST(BayesHashTest, MessageKeyIgnoresTransportButNotContent) {
  const std::string a = "Received: from a\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\nbody line\r\nmore\r\n";
  const std::string relayed =
      "Received: from b\nReceived: from c\nMessage-ID:  <1@x> \nSubject: s\n\nbody line\nmore\n";
  const std::string other_id = "Message-ID: <2@x>\r\n\r\nbody line\r\nmore\r\n";
  const std::string other_body = "Message-ID: <1@x>\r\n\r\nbody line\r\nless\r\n";
  const std::string folded = "Message-ID:\r\n <1@x>\r\n\r\nbody line\r\nmore\r\n";
  EXPECT_EQ(bayes_message_key(a), bayes_message_key(relayed));
  EXPECT_NE(bayes_message_key(a), bayes_message_key(other_id));
  EXPECT_NE(bayes_message_key(a), bayes_message_key(other_body));
  EXPECT_EQ(bayes_message_key(a), bayes_message_key(folded));
  // No Message-ID: the body alone decides.
  EXPECT_EQ(bayes_message_key("Subject: a\n\nsame\n"), bayes_message_key("Subject: b\n\nsame\n"));
  EXPECT_NE(bayes_message_key("Subject: a\n\nsame\n"), bayes_message_key("Subject: a\n\nother\n"));
}

// -------------------------------------------------------------- tokenizer

TEST(BayesTokenizerTest, WordsAreLowerCasedTrimmedAndDistinct) {
  const auto t = body_tokens("Hello WORLD, it's a test-case... 'quoted' $100 50% FREE!!! hello Hello");
  EXPECT_TRUE(has(t, "hello"));
  EXPECT_TRUE(has(t, "world"));
  EXPECT_TRUE(has(t, "it's"));
  EXPECT_TRUE(has(t, "test-case"));
  EXPECT_TRUE(has(t, "quoted"));
  EXPECT_TRUE(has(t, "$100"));
  EXPECT_TRUE(has(t, "50%"));
  EXPECT_TRUE(has(t, "free!!!"));
  EXPECT_FALSE(has(t, "a"));
  EXPECT_EQ(std::count(t.begin(), t.end(), "hello"), 1);
}

TEST(BayesTokenizerTest, WordLengthBounds) {
  const std::string fifteen = "abcdefghijklmno";
  ASSERT_EQ(fifteen.size(), kBayesMaxWordBytes);
  const auto t = body_tokens("ab abc " + fifteen + " " + fifteen + "p");
  EXPECT_FALSE(has(t, "ab"));  // kBayesMinWordBytes - 1
  EXPECT_TRUE(has(t, "abc"));  // kBayesMinWordBytes
  EXPECT_TRUE(has(t, fifteen));
  EXPECT_TRUE(has(t, "sk:abcdefg"));  // one past: the first kBayesLongWordPrefix bytes
  EXPECT_FALSE(has(t, fifteen + "p"));
  // A long word is cut at a UTF-8 boundary: 8 x "é" (16 bytes) keeps 3 of them.
  std::string accents;
  for (int i = 0; i < 8; ++i) accents += "\xC3\xA9";
  EXPECT_TRUE(has(body_tokens(accents), "sk:\xC3\xA9\xC3\xA9\xC3\xA9"));
}

TEST(BayesTokenizerTest, HeaderTokensArePrefixedByTheirField) {
  const auto t = tokens_of(
      "Received: from x\r\nFrom: \"Cheap Meds\" <Deals@Pharma.TEST>\r\nReply-To: a@elsewhere.test\r\n"
      "X-Mailer: Bulk 1.0\r\nSubject: Limited OFFER inside\r\n\r\nhello there\r\n");
  EXPECT_TRUE(has(t, "s:limited"));
  EXPECT_TRUE(has(t, "s:offer"));
  EXPECT_TRUE(has(t, "s:inside"));
  EXPECT_FALSE(has(t, "offer"));  // subject words are not body words
  EXPECT_TRUE(has(t, "from:deals@pharma.test"));
  EXPECT_TRUE(has(t, "fromdom:pharma.test"));
  EXPECT_TRUE(has(t, "fromname:cheap"));
  EXPECT_TRUE(has(t, "rtdom:elsewhere.test"));
  EXPECT_TRUE(has(t, "rt:otherdomain"));
  EXPECT_TRUE(has(t, "h:x-mailer"));
  EXPECT_TRUE(has(t, "h:received"));
  EXPECT_TRUE(has(t, "ct:text/plain"));
  EXPECT_TRUE(has(t, "parts:1"));
  EXPECT_TRUE(has(t, "hello"));
  EXPECT_TRUE(has(t, "there"));
}

TEST(BayesTokenizerTest, RawHeaderFieldsGiveValueTokens) {
  const auto t = tokens_of(
      "From someone@example.test  Thu Aug 22 13:17:22 2002\r\n"
      "Received: from mail.sender.test (mail.sender.test [192.0.2.7])\r\n"
      "\tby mx.example.test (Postfix) with ESMTP id 136B943C32; Thu, 22 Aug 2002 08:17:21 -0400\r\n"
      "Received: from a by b\r\nReceived: from c by d\r\n"
      "Message-ID: <20020822.ABCDEF@Sender.TEST>\r\n"
      "X-Mailer: Microsoft Outlook Express 6.00\r\n"
      "Content-Type: text/plain;\r\n charset=\"iso-8859-1\"\r\n"
      "List-Id: Some list <list.example.test>\r\n"
      "Subject: hi\r\n\r\nbody words\r\n");
  EXPECT_TRUE(has(t, "h:received"));
  EXPECT_TRUE(has(t, "h:received*3"));
  EXPECT_FALSE(has(t, "h:received:mx.example.test"));  // Received gives relay tokens (below), not words
  EXPECT_TRUE(has(t, "h:list-id"));
  EXPECT_FALSE(has(t, "h:list-id:list.example.test"));
  EXPECT_FALSE(has(t, "h:list-id*1"));
  EXPECT_TRUE(has(t, "h:message-id:sender.test"));
  EXPECT_FALSE(has(t, "h:message-id:20020822.abcdef"));
  EXPECT_TRUE(has(t, "h:x-mailer:microsoft"));
  EXPECT_TRUE(has(t, "h:x-mailer:outlook"));
  EXPECT_TRUE(has(t, "h:content-type:text"));
  EXPECT_TRUE(has(t, "h:content-type:iso-8859-1"));  // from the folded line
  EXPECT_TRUE(has(t, "body"));
  EXPECT_FALSE(has(t, "h:body"));
  EXPECT_FALSE(has(tokens_of("Subject: x\r\n\r\nb\r\n"), "h:message-id:none"));
  EXPECT_TRUE(has(tokens_of("Message-ID: <no-domain>\r\n\r\nb\r\n"), "h:message-id:none"));
  std::string many;
  for (int i = 0; i < 12; ++i) many += "Received: x\r\n";
  EXPECT_TRUE(has(tokens_of(many + "\r\nb\r\n"), "h:received*10+"));
}

TEST(BayesTokenizerTest, ReceivedFieldsGiveTheirRelays) {
  const auto t = tokens_of(
      "Received: from localhost (localhost [127.0.0.1])\r\n\tby mx.example.test (Postfix) with ESMTP id 6B05216F17\r\n"
      "\tfor <jm@localhost>; Tue,  3 Dec 2002 11:56:55 +0000 (GMT)\r\n"
      "Received: from ntls1.DigitalRiver.com (ntls1.digitalriver.com\r\n    [63.70.105.139]) by "
      "dogma.slashnull.org (8.11.6/8.11.6) with ESMTP id\r\n    gB37LL825293 for <jm-cuteftp@JMASON.ORG>; Tue, 3 "
      "Dec 2002 07:21:21 GMT\r\n"
      "Received: from ntls (198.51.100.146) by ntls1.digitalriver.com. (LSMTP for Windows NT v1.1b) with SMTP id "
      "<2.0009C5FC@ntls1.digitalriver.com>\r\n"
      "Subject: hi\r\n\r\nbody\r\n");
  for (const char* want : {"r:mx.example.test", "r:example.test", "r:ntls1.digitalriver.com", "r:digitalriver.com",
                           "r:dogma.slashnull.org", "r:slashnull.org", "r:ip:63.70.105.139", "r:ip:63.70.105",
                           "r:ip:63.70", "r:ip:198.51.100.146", "r:for:jm-cuteftp@jmason.org", "r:for:jm@localhost"})
    EXPECT_TRUE(has(t, want)) << want;
  // Loopback, one-label names, software versions, dates and queue ids say
  // nothing about the sender.
  for (const char* unwanted : {"r:ip:127.0.0.1", "r:ip:127.0.0", "r:localhost", "r:ntls", "r:v1.1b", "r:8.11.6",
                               "r:gb37ll825293", "r:esmtp", "r:2002", "r:com", "r:ip:63",
                               "r:for:2.0009c5fc@ntls1.digitalriver.com"})
    EXPECT_FALSE(has(t, unwanted)) << unwanted;
}

TEST(BayesTokenizerTest, ToAndCcGiveTheirMailboxesAndDomains) {
  const auto t = tokens_of(
      "To: \"Valued Customer\" <yyyy-CuteFTP@JMASON.ORG>, other@example.test\r\n"
      "Cc: list@lists.example.net\r\nSubject: hi\r\n\r\nbody\r\n");
  for (const char* want : {"h:to:yyyy-cuteftp@jmason.org", "h:to:@jmason.org", "h:to:other@example.test",
                           "h:to:@example.test", "h:cc:list@lists.example.net", "h:cc:@lists.example.net"})
    EXPECT_TRUE(has(t, want)) << want;
  EXPECT_FALSE(has(t, "h:to:valued"));  // display names are not read here
  EXPECT_FALSE(has(t, "h:to:customer"));
}

TEST(BayesTokenizerTest, HeaderFieldLimits) {
  std::string header;
  for (std::size_t i = 1; i < kBayesMaxHeaderFields; ++i) header.append("X-Filler: value\r\n");
  const auto at = tokens_of(header + "X-Mailer: lastvalue\r\n\r\nbody\r\n");  // field kBayesMaxHeaderFields
  EXPECT_TRUE(has(at, "h:x-mailer:lastvalue"));
  const auto past = tokens_of(header + "X-Filler: value\r\nX-Mailer: lastvalue\r\n\r\nbody\r\n");
  EXPECT_FALSE(has(past, "h:x-mailer:lastvalue"));  // field kBayesMaxHeaderFields + 1
  // A value is read up to kBayesMaxFieldBytes: "word" ending at the limit, then one byte past it.
  const std::string at_limit = "X-Mailer:" + std::string(kBayesMaxFieldBytes - 4, ' ') + "word\r\n\r\nb\r\n";
  EXPECT_TRUE(has(tokens_of(at_limit), "h:x-mailer:word"));
  const std::string past_limit =
      "X-Mailer:" + std::string(kBayesMaxFieldBytes - 3, ' ') + "word\r\n\r\nb\r\n";
  EXPECT_FALSE(has(tokens_of(past_limit), "h:x-mailer:word"));
  EXPECT_TRUE(has(tokens_of(past_limit), "h:x-mailer:wor"));
  // The header is read up to kBayesMaxHeaderBytes: "endword" ending at the limit, then one byte past it.
  std::string big;
  while (big.size() < kBayesMaxHeaderBytes - 3000) big += "X-Pad: " + std::string(1000, 'p') + "\r\n";
  const std::string last = "X-Mailer: endword";
  const std::size_t pad = kBayesMaxHeaderBytes - big.size() - std::string("X-Q: \r\n").size() - last.size();
  const std::string fits = big + "X-Q: " + std::string(pad, 'q') + "\r\n" + last;
  ASSERT_EQ(fits.size(), kBayesMaxHeaderBytes);
  EXPECT_TRUE(has(tokens_of(fits + "\r\n\r\nb\r\n"), "h:x-mailer:endword"));
  const std::string over = big + "X-Q: " + std::string(pad + 1, 'q') + "\r\n" + last;
  EXPECT_FALSE(has(tokens_of(over + "\r\n\r\nb\r\n"), "h:x-mailer:endword"));
  EXPECT_TRUE(has(tokens_of(over + "\r\n\r\nb\r\n"), "h:x-mailer:endwor"));
}

TEST(BayesTokenizerTest, UrlHostsAndTheirParentDomains) {
  const auto t = body_tokens("see http://www.Shop.Example.COM/x?y and https://10.0.0.1/login now");
  EXPECT_TRUE(has(t, "url:www.shop.example.com"));
  EXPECT_TRUE(has(t, "url:shop.example.com"));
  EXPECT_TRUE(has(t, "url:example.com"));
  EXPECT_FALSE(has(t, "url:com"));
  EXPECT_TRUE(has(t, "url:ip"));
  EXPECT_TRUE(has(t, "url:10.0.0.1"));
}

TEST(BayesTokenizerTest, HtmlIsReducedToItsVisibleText) {
  ParsedMessage m;
  m.html =
      "<html><head><style>.hidden { color: white }</style><SCRIPT>var tracker = 1;</SCRIPT></head>"
      "<body><p>Buy V<b></b>iagra&nbsp;today &amp; save&#33;</p><!-- invisible comment -->"
      "<a href=\"http://click.spam.test/r\">here</a> 3 &lt; 4</body></html>";
  const auto t = bayes_tokens("", m);
  EXPECT_TRUE(has(t, "viagra"));  // an inline tag does not split a word
  EXPECT_TRUE(has(t, "today"));
  EXPECT_TRUE(has(t, "save!"));
  EXPECT_TRUE(has(t, "here"));
  EXPECT_FALSE(has(t, "hidden"));
  EXPECT_FALSE(has(t, "tracker"));
  EXPECT_FALSE(has(t, "invisible"));
  EXPECT_FALSE(has(t, "href"));
  EXPECT_TRUE(has(t, "html:style"));
  EXPECT_TRUE(has(t, "html:script"));
  EXPECT_TRUE(has(t, "html:a"));
  EXPECT_TRUE(has(t, "url:click.spam.test"));
  EXPECT_TRUE(has(t, "url:spam.test"));
}

TEST(BayesTokenizerTest, AttachmentsGiveTypeAndExtensionTokens) {
  ParsedMessage m;
  Part body;
  body.content_type = "text/plain";
  Part zip;
  zip.content_type = "application/zip";
  zip.filename = "Invoice.ZIP";
  zip.attachment = true;
  m.parts = {body, zip};
  const auto t = bayes_tokens("", m);
  EXPECT_TRUE(has(t, "ct:application/zip"));
  EXPECT_TRUE(has(t, "att:zip"));
  EXPECT_TRUE(has(t, "parts:2"));
}

std::string numbered_words(std::size_t n) {
  std::string text;
  for (std::size_t i = 0; i < n; ++i) {
    text += 'w';
    text += std::to_string(100000 + i);
    text += ' ';
  }
  return text;
}

TEST(BayesTokenizerTest, DistinctTokensStopAtTheLimit) {
  // "parts:0" is the one token of a bare text message that is not a word.
  const auto at = body_tokens(numbered_words(kBayesMaxTokens - 1));
  EXPECT_EQ(at.size(), kBayesMaxTokens);
  EXPECT_TRUE(has(at, "w" + std::to_string(100000 + kBayesMaxTokens - 2)));
  const auto past = body_tokens(numbered_words(kBayesMaxTokens));
  EXPECT_EQ(past.size(), kBayesMaxTokens);
  EXPECT_FALSE(has(past, "w" + std::to_string(100000 + kBayesMaxTokens - 1)));
}

TEST(BayesTokenizerTest, OnlyTheFirstBodyBytesAreRead) {
  std::string text(kBayesMaxBodyBytes - 4, ' ');
  const auto inside = body_tokens(text + "last");  // ends at the limit
  EXPECT_TRUE(has(inside, "last"));
  const auto past = body_tokens(text + " last");  // one byte past it
  EXPECT_FALSE(has(past, "last"));
  EXPECT_TRUE(has(past, "las"));
}

TEST(BayesTokenizerTest, HostileInputStaysBounded) {
  // Unclosed tag, unclosed comment, unclosed script, bad entities: no crash, no hang.
  ParsedMessage m;
  m.html = "<p>ok &#xFFFFFFFF; &#; &bogus; <!-- never closed <script> x";
  EXPECT_TRUE(has(bayes_tokens("", m), "html:p"));
  m.html = "<script>" + std::string(100000, 'x');
  EXPECT_TRUE(has(bayes_tokens("", m), "html:script"));
  m.text = std::string(kBayesMaxBodyBytes * 2, '\xff');
  EXPECT_LE(bayes_tokens("", m).size(), kBayesMaxTokens);
}

// ------------------------------------------------------------------ store

std::vector<std::string_view> views(const std::vector<std::string>& messages) {
  return std::vector<std::string_view>(messages.begin(), messages.end());
}

TEST(BayesStoreTest, RoundTripThroughTheDatabase) {
  TempDir dir("bayes");
  const auto path = dir.path() / "bayes.sqlite";
  const std::vector<std::string> spam = {message("cheap pills", "buy cheap pills now", "<s1@x>"),
                                         message("cheap watches", "buy cheap watches now", "<s2@x>")};
  const std::vector<std::string> ham = {message("meeting", "agenda for the meeting", "<h1@x>")};
  {
    auto store = open_bayes(path, true);
    ASSERT_TRUE(store) << store.error();
    EXPECT_TRUE((*store)->writable());
    auto learned = learn_contents(**store, true, views(spam), MimeLimits{});
    ASSERT_TRUE(learned) << learned.error();
    EXPECT_EQ(learned->learned, 2u);
    EXPECT_EQ(learned->spam_total, 2u);
    learned = learn_contents(**store, false, views(ham), MimeLimits{});
    ASSERT_TRUE(learned) << learned.error();
    EXPECT_EQ(learned->ham_total, 1u);
    const BayesCounts cheap = (*store)->counts(bayes_token_hash("cheap"));
    EXPECT_EQ(cheap.spam, 2u);
    EXPECT_EQ(cheap.ham, 0u);
  }
  auto store = open_bayes(path, false);
  ASSERT_TRUE(store) << store.error();
  EXPECT_FALSE((*store)->writable());
  EXPECT_EQ((*store)->spam_messages(), 2u);
  EXPECT_EQ((*store)->ham_messages(), 1u);
  EXPECT_GT((*store)->token_count(), 10u);
  const BayesCounts cheap = (*store)->counts(bayes_token_hash("cheap"));
  EXPECT_EQ(cheap.spam, 2u);
  const BayesCounts agenda = (*store)->counts(bayes_token_hash("agenda"));
  EXPECT_EQ(agenda.spam, 0u);
  EXPECT_EQ(agenda.ham, 1u);
  const BayesCounts now = (*store)->counts(bayes_token_hash("now"));
  EXPECT_EQ(now.spam, 2u);
  const BayesCounts unknown = (*store)->counts(bayes_token_hash("never-seen"));
  EXPECT_EQ(unknown.spam + unknown.ham, 0u);
  // The writable store answers from SQLite, the read-only one from memory: the same.
  auto writer = open_bayes(path, true);
  ASSERT_TRUE(writer);
  EXPECT_EQ((*writer)->token_count(), (*store)->token_count());
  for (const auto& token : tokens_of(spam[0])) {
    const auto a = (*store)->counts(bayes_token_hash(token));
    const auto b = (*writer)->counts(bayes_token_hash(token));
    EXPECT_EQ(a.spam, b.spam) << token;
    EXPECT_EQ(a.ham, b.ham) << token;
  }
}

TEST(BayesStoreTest, LearningIsIdempotentAndRelearningMoves) {
  TempDir dir("bayes");
  auto store = open_bayes(dir.path() / "b.sqlite", true);
  ASSERT_TRUE(store) << store.error();
  const std::string m = message("hello", "a message about lunch", "<same@x>");
  // The same message relayed again: other Received fields, LF line ends.
  std::string relayed = "Received: from elsewhere\n" + m;
  relayed.erase(std::remove(relayed.begin(), relayed.end(), '\r'), relayed.end());

  auto r = learn_contents(**store, true, {m, relayed, m}, MimeLimits{});
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->learned, 1u);
  EXPECT_EQ(r->skipped, 2u);
  EXPECT_EQ(r->spam_total, 1u);
  EXPECT_EQ((*store)->counts(bayes_token_hash("lunch")).spam, 1u);

  r = learn_contents(**store, false, {m}, MimeLimits{});
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->learned, 1u);
  EXPECT_EQ(r->spam_total, 0u);
  EXPECT_EQ(r->ham_total, 1u);
  const BayesCounts lunch = (*store)->counts(bayes_token_hash("lunch"));
  EXPECT_EQ(lunch.spam, 0u);
  EXPECT_EQ(lunch.ham, 1u);

  r = learn_contents(**store, false, {relayed}, MimeLimits{});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->skipped, 1u);
  EXPECT_EQ(r->ham_total, 1u);
}

TEST(BayesStoreTest, LearningFilesIsAllOrNothing) {
  TempDir dir("bayes");
  const auto good = dir.path() / "good.eml";
  std::ofstream(good) << message("x", "some words here", "<g@x>");
  auto store = open_bayes(dir.path() / "b.sqlite", true);
  ASSERT_TRUE(store);
  auto r = learn_messages(**store, true, {good, dir.path() / "missing.eml"}, MimeLimits{});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("missing.eml"), std::string::npos) << r.error();
  EXPECT_EQ((*store)->spam_messages(), 0u);
  EXPECT_EQ((*store)->counts(bayes_token_hash("words")).spam, 0u);
  r = learn_messages(**store, true, {good}, MimeLimits{});
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->learned, 1u);
  EXPECT_EQ((*store)->counts(bayes_token_hash("words")).spam, 1u);
}

TEST(BayesStoreTest, ReadOnlyStoreCannotLearn) {
  TempDir dir("bayes");
  const auto path = dir.path() / "b.sqlite";
  {
    auto store = open_bayes(path, true);
    ASSERT_TRUE(store);
  }
  auto store = open_bayes(path, false);
  ASSERT_TRUE(store) << store.error();
  auto r = learn_contents(**store, true, {message("x", "words words")}, MimeLimits{});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("read-only"), std::string::npos) << r.error();
  auto again = open_bayes(path, false);
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->spam_messages(), 0u);
}

TEST(BayesStoreTest, AbsentDamagedAndForeignFilesAreRefusedClearly) {
  TempDir dir("bayes");
  const auto absent = dir.path() / "absent.sqlite";
  auto r = open_bayes(absent, false);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find(absent.string()), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("does not exist"), std::string::npos) << r.error();
  EXPECT_FALSE(std::filesystem::exists(absent));

  const auto garbage = dir.path() / "garbage.sqlite";
  std::ofstream(garbage) << std::string(8192, 'x');
  for (const bool writable : {false, true}) {
    r = open_bayes(garbage, writable);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("garbage.sqlite"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("not a database"), std::string::npos) << r.error();
  }

  const auto foreign = dir.path() / "foreign.sqlite";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(foreign.c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE other (x INTEGER)", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  r = open_bayes(foreign, true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("not an mxgate Bayes store"), std::string::npos) << r.error();

  const auto empty = dir.path() / "empty.sqlite";
  std::ofstream(empty).flush();
  r = open_bayes(empty, false);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("empty"), std::string::npos) << r.error();
}

TEST(BayesStoreTest, AnotherSchemaOrTokenizerIsRefused) {
  TempDir dir("bayes");
  const auto path = dir.path() / "b.sqlite";
  {
    auto store = open_bayes(path, true);
    ASSERT_TRUE(store);
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "UPDATE meta SET value = 'old-1' WHERE name = 'tokenizer'", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto r = open_bayes(path, false);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("tokenizer \"old-1\""), std::string::npos) << r.error();

  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  r = open_bayes(path, true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("schema version 99"), std::string::npos) << r.error();
}

TEST(BayesStoreTest, ReaderSeesThatTheDatabaseChanged) {
  TempDir dir("bayes");
  const auto path = dir.path() / "b.sqlite";
  auto writer = open_bayes(path, true);
  ASSERT_TRUE(writer);
  auto reader = open_bayes(path, false);
  ASSERT_TRUE(reader) << reader.error();
  EXPECT_FALSE((*reader)->changed());
  ASSERT_TRUE(learn_contents(**writer, true, {message("x", "some words")}, MimeLimits{}));
  EXPECT_TRUE((*reader)->changed());
  EXPECT_EQ((*reader)->spam_messages(), 0u);  // the snapshot stays as loaded
  auto fresh = open_bayes(path, false);
  ASSERT_TRUE(fresh);
  EXPECT_EQ((*fresh)->spam_messages(), 1u);
}

// ------------------------------------------------------------ classifier

// Two vocabularies that never meet, and a shared one both use.
class SyntheticCorpus {
 public:
  explicit SyntheticCorpus(unsigned seed) : random_(seed) {}

  std::string make(bool spam, int n) {
    static const std::vector<std::string> kSpam = {
        "viagra",  "casino", "winner", "prize",    "mortgage", "refinance", "unsubscribe", "guaranteed",
        "limited", "offer",  "credit", "discount", "pharmacy", "bonus",     "jackpot",     "lottery"};
    static const std::vector<std::string> kHam = {
        "meeting", "agenda",   "patch",  "review", "kernel",   "release", "minutes", "lunch",
        "project", "deadline", "commit", "branch", "schedule", "report",  "budget",  "question"};
    static const std::vector<std::string> kShared = {"the",   "and",   "you",   "this", "that",
                                                     "with",  "have",  "from",  "your", "will",
                                                     "about", "there", "their", "what", "when"};
    const auto& own = spam ? kSpam : kHam;
    std::string body;
    for (int i = 0; i < 40; ++i) {
      const auto& list = (i % 2 == 0) ? own : kShared;
      body += list[random_() % list.size()] + " ";
    }
    const std::string subject = own[random_() % own.size()] + " " + kShared[random_() % kShared.size()];
    return message(subject, body, "<" + std::string(spam ? "s" : "h") + std::to_string(n) + "@corpus.test>");
  }

 private:
  std::mt19937 random_;
};

const Finding* bayes_finding(const Findings& f) {
  for (const auto& finding : f.findings)
    if (finding.rule.rfind("BAYES_", 0) == 0) return &finding;
  return nullptr;
}

class BayesClassifierTest : public ::testing::Test {
 protected:
  void learn(int spam, int ham) {
    store_ = std::move(open_bayes(dir_.path() / "b.sqlite", true).value());
    std::vector<std::string> s, h;
    for (int i = 0; i < spam; ++i) s.push_back(corpus_.make(true, i));
    for (int i = 0; i < ham; ++i) h.push_back(corpus_.make(false, i));
    ASSERT_TRUE(learn_contents(*store_, true, views(s), MimeLimits{}));
    ASSERT_TRUE(learn_contents(*store_, false, views(h), MimeLimits{}));
    reader_ = std::move(open_bayes(dir_.path() / "b.sqlite", false).value());
  }

  TempDir dir_{"bayes"};
  SyntheticCorpus corpus_{42};
  std::unique_ptr<BayesStore> store_;
  std::unique_ptr<BayesStore> reader_;
};

TEST_F(BayesClassifierTest, SeparableCorporaAreSeparated) {
  learn(200, 200);
  ASSERT_EQ(reader_->spam_messages(), 200u);
  for (int i = 0; i < 20; ++i) {
    const std::string spam_text = corpus_.make(true, 1000 + i);
    const std::string ham_text = corpus_.make(false, 1000 + i);
    const ParsedMessage spam = parse_mime(spam_text, MimeLimits{});
    const ParsedMessage ham = parse_mime(ham_text, MimeLimits{});
    const BayesResult s = bayes_classify(spam_text, spam, *reader_);
    const BayesResult h = bayes_classify(ham_text, ham, *reader_);
    EXPECT_GT(s.probability, 0.99);
    EXPECT_LT(h.probability, 0.01);
    EXPECT_LE(s.clues.size(), kBayesMaxClues);
    // The SQLite path agrees with the snapshot.
    EXPECT_DOUBLE_EQ(bayes_classify(spam_text, spam, *store_).probability, s.probability);

    const Findings fs = check_bayes(spam_text, spam, *reader_);
    const Finding* f = bayes_finding(fs);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->category, Category::spam);
    EXPECT_TRUE(f->rule == "BAYES_99" || f->rule == "BAYES_999") << f->rule;
    EXPECT_GE(f->score, 5.0);
    EXPECT_NE(f->detail.find("p="), std::string::npos);
    const Findings fh = check_bayes(ham_text, ham, *reader_);
    const Finding* g = bayes_finding(fh);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(g->rule, "BAYES_00");
    EXPECT_LT(g->score, 0);
  }
}

TEST_F(BayesClassifierTest, UnknownWordsAreNoEvidence) {
  learn(20, 20);
  const BayesResult r = bayes_classify("", text_message("zyxwv qwerty asdfgh"), *reader_);
  EXPECT_TRUE(r.clues.empty());
  EXPECT_DOUBLE_EQ(r.probability, 0.5);
}

TEST_F(BayesClassifierTest, NoFindingBelowTheMinimumCounts) {
  learn(30, 40);
  const std::string text = corpus_.make(true, 999);
  const ParsedMessage spam = parse_mime(text, MimeLimits{});
  EXPECT_TRUE(check_bayes(text, spam, *reader_).findings.empty());  // defaults: 200 each
  EXPECT_EQ(check_bayes(text, spam, *reader_, BayesOptions{30, 40}).findings.size(), 1u);  // at the limit
  EXPECT_TRUE(check_bayes(text, spam, *reader_, BayesOptions{31, 40}).findings.empty());   // one past, spam
  EXPECT_TRUE(check_bayes(text, spam, *reader_, BayesOptions{30, 41}).findings.empty());   // one past, ham
}

TEST(BayesBucketsTest, BucketsAscendAndCoverZeroToOne) {
  EXPECT_EQ(kBayesBuckets.front().from, 0.0);
  for (std::size_t i = 1; i < kBayesBuckets.size(); ++i) {
    EXPECT_GT(kBayesBuckets[i].from, kBayesBuckets[i - 1].from);
    EXPECT_GE(kBayesBuckets[i].score, kBayesBuckets[i - 1].score);
  }
  EXPECT_LT(kBayesBuckets.back().from, 1.0);
}

}  // namespace
}  // namespace mxgate::filter
