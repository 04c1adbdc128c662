"""The content filter through the running gateway, against a real clamd.

Every case sends a real message over SMTP and checks what the sender was
told (550 5.7.1 / 451 4.7.1 / 250), what was delivered, what was held in the
quarantine (`mxgate quarantine ...`), and the log line with the verdict.
Each threat has a legitimate twin that must pass.  The configuration is the
one the filtering issue names ([filter] and [filter.actions]).

clamd runs from tests/integration/clamdbed.py with a database the bed
writes (the EICAR test signature, joined at run time from two halves).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import zipfile
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from clamdbed import ClamdBed, eicar
from mxgate_harness import BINARY, run, session, start_server

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def filter_config(bed: ClamdBed | None, **extra) -> dict:
    config = {
        "accept_domains": ["example.test"],
        "filter": {
            "protected_domains": ["example.test"],
            "protected_names": ["Alice Martin"],
            "spam_threshold": 5.0,
            "actions": {"spam": "quarantine", "phishing": "reject", "malware": "reject",
                        "impersonation": "quarantine"},
        },
    }
    if bed is not None:
        config["filter"]["clamd"] = bed.endpoint
        config["filter"]["clamd_max_stream"] = bed.max_stream
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config["filter"].get(key), dict):
            config["filter"][key].update(value)
        else:
            config["filter"][key] = value
    return config


def message(subject: str, body: str = "Hello.", sender: str = "Bob Smith <bob@partner.test>",
            html: str | None = None, attachments: list[tuple[str, str, bytes]] = (),
            headers: dict[str, str] | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "carol@example.test"
    m["Subject"] = subject
    m["Message-ID"] = f"<{subject.replace(' ', '.')}@partner.test>"
    m["Date"] = formatdate()
    for name, value in (headers or {}).items():
        m[name] = value
    m.set_content(body)
    if html is not None:
        m.add_alternative(html, subtype="html")
    for filename, mime_type, data in attachments:
        maintype, subtype = mime_type.split("/")
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return m.as_bytes(policy=m.policy.clone(linesep="\r\n"))


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def encrypted_zip(files: dict[str, bytes]) -> bytes:
    """A traditional PKWARE-encrypted zip made by Info-ZIP's zip -P."""
    with tempfile.TemporaryDirectory(prefix="mxgate-zip-") as d:
        for name, data in files.items():
            (Path(d) / name).write_bytes(data)
        subprocess.run(["zip", "-q", "-P", "infected", "out.zip", *files], cwd=d, check=True, timeout=30)
        return (Path(d) / "out.zip").read_bytes()


def docm(with_macros: bool) -> bytes:
    """A Word document: with_macros adds the VBA project (ECMA-376 vbaProject.bin)."""
    files = {
        "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        "word/document.xml": b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"/>',
    }
    if with_macros:
        files["word/vbaProject.bin"] = bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 504
    return zip_of(files)


def pe_executable() -> bytes:
    """The start of a PE file: MZ header whose e_lfanew points at "PE\\0\\0"."""
    head = bytearray(256)
    head[0:2] = b"MZ"
    head[0x3C:0x40] = (0x80).to_bytes(4, "little")
    head[0x80:0x84] = b"PE\0\0"
    return bytes(head)


class FilterTest(unittest.TestCase):
    clamd: ClamdBed

    @classmethod
    def setUpClass(cls):
        cls.clamd = ClamdBed(max_stream=4 << 20).start()

    @classmethod
    def tearDownClass(cls):
        cls.clamd.close()

    def gateway(self, **extra):
        return start_server(self, filter_config(self.clamd, **extra))

    def send(self, server, content: bytes, rcpt: str = "carol@example.test",
             sender: str = "bob@partner.test"):
        with session(server) as c:
            return c.send_message(sender, [rcpt], content)

    def quarantine(self, server, *args: str) -> subprocess.CompletedProcess:
        return run([str(BINARY), "quarantine", *args, "--config", str(server.config_path)], text=True)

    def held(self, server) -> list[dict]:
        out = self.quarantine(server, "list", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def assert_refused(self, server, content: bytes, code: int, text: str):
        reply = self.send(server, content)
        self.assertEqual(reply.code, code, str(reply))
        self.assertIn(text, reply.lines[-1])
        server.assert_nothing_stored(self, settle=0.3)
        self.assertEqual(self.held(server), [])
        return reply

    def assert_held(self, server, content: bytes, rule: str) -> dict:
        reply = self.send(server, content)
        self.assertEqual(reply.code, 250, str(reply))
        qid = reply.lines[-1].rsplit(" ", 1)[-1]
        held = self.held(server)
        self.assertEqual([h["id"] for h in held], [qid])
        self.assertTrue(held[0]["verdict"].startswith("quarantine;"), held[0]["verdict"])
        self.assertIn(rule, held[0]["verdict"])
        time.sleep(0.3)
        self.assertEqual(server.maildir_files(), [], "a held message was delivered")
        self.assertEqual([p for p in server.spool_files() if "quarantine" not in p.parts], [],
                         "a held message is in the queue")
        return held[0]

    def assert_delivered(self, server, content: bytes):
        held_before = self.held(server)
        before = set(server.maildir_files())
        reply = self.send(server, content)
        self.assertEqual(reply.code, 250, str(reply))
        [delivered] = [m for m in server.wait_for_messages(len(before) + 1) if m.path not in before]
        verdict = delivered.filter_headers.get("X-mxgate-Verdict", "")
        self.assertTrue(verdict.startswith("accept;"), verdict)
        self.assertEqual(delivered.filter_headers.get("X-Spam-Flag"), "NO")
        self.assertEqual(self.held(server), held_before)
        return delivered

    # ---- malware and ransomware carriers

    def test_eicar_in_a_base64_attachment_is_refused(self):
        server = self.gateway()
        content = message("report", attachments=[("report.txt", "application/octet-stream", eicar())])
        self.assertIn(b"Content-Transfer-Encoding: base64", content)
        self.assertNotIn(eicar(), content)  # only clamd, after our decoding, sees it
        reply = self.assert_refused(server, content, 550, "Message refused as malware")
        self.assertEqual(reply.lines[-1], "5.7.1 Message refused as malware or a blocked attachment type")
        self.assertNotIn("Eicar", str(reply))  # no internal detail for the sender
        server.wait_for_log(r"filter: \S+: client=127\.0\.0\.1:\d+ from=<bob@partner\.test> action=reject "
                            r".*rules=CLAMAV=1\.0")
        # The twin: the same attachment without the test string.
        self.assert_delivered(server, message("report", attachments=[
            ("report.txt", "application/octet-stream", b"quarterly figures\n")]))

    def test_eicar_is_held_when_malware_is_quarantined_and_release_delivers_it(self):
        server = self.gateway(actions={"malware": "quarantine"})
        content = message("held", attachments=[("x.bin", "application/octet-stream", eicar())])
        held = self.assert_held(server, content, "CLAMAV")
        self.assertEqual(held["sender"], "bob@partner.test")
        self.assertEqual(held["recipients"], ["carol@example.test"])
        show = self.quarantine(server, "show", held["id"])
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn("Subject: held", show.stdout)
        released = self.quarantine(server, "release", held["id"])
        self.assertEqual(released.returncode, 0, released.stderr)
        self.assertEqual(released.stdout.strip(), f"released {held['id']}: flush requested")
        [delivered] = server.wait_for_messages(1)
        self.assertTrue(delivered.filter_headers["X-mxgate-Verdict"].startswith("quarantine;"))
        self.assertIn(b"Subject: held", delivered.content)
        self.assertEqual(self.held(server), [])

    def test_quarantine_delete(self):
        server = self.gateway(actions={"malware": "quarantine"})
        held = self.assert_held(server, message("del", attachments=[
            ("x.bin", "application/octet-stream", eicar())]), "CLAMAV")
        out = self.quarantine(server, "delete", held["id"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(self.held(server), [])
        out = self.quarantine(server, "release", held["id"])
        self.assertEqual(out.returncode, 1)
        self.assertIn("no such message", out.stderr)

    def test_macro_document_and_encrypted_zip_are_refused_and_their_twins_pass(self):
        server = self.gateway()
        doc = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        self.assert_refused(server, message("macro", attachments=[("invoice.docm", doc, docm(True))]),
                            550, "5.7.1")
        server.wait_for_log(r"rules=OFFICE_MACRO=1\.0")
        self.assert_refused(server, message("locked", attachments=[
            ("invoice.zip", "application/zip", encrypted_zip({"invoice.pdf": PDF}))]), 550, "5.7.1")
        server.wait_for_log(r"rules=ENCRYPTED_ARCHIVE=1\.0")
        self.assert_delivered(server, message("plain doc", attachments=[("invoice.docx", doc, docm(False))]))

    def test_macro_document_is_held_when_malware_is_quarantined(self):
        server = self.gateway(actions={"malware": "quarantine"})
        doc = "application/vnd.ms-word.document.macroEnabled.12"
        self.assert_held(server, message("macro", attachments=[("invoice.docm", doc, docm(True))]),
                         "OFFICE_MACRO")
        self.assertEqual(len(self.held(server)), 1)
        self.send(server, message("zip", attachments=[
            ("invoice.zip", "application/zip", encrypted_zip({"invoice.pdf": PDF}))]))
        held = self.held(server)
        self.assertEqual(len(held), 2)
        self.assertIn("ENCRYPTED_ARCHIVE", held[1]["verdict"])

    def test_an_executable_is_judged_by_its_content_not_its_name(self):
        server = self.gateway()
        self.assert_refused(server, message("scan", attachments=[
            ("scan.pdf", "application/pdf", pe_executable())]), 550, "5.7.1")
        server.wait_for_log(r"rules=EXECUTABLE_ATTACHMENT=1\.0")
        self.assert_refused(server, message("zipped", attachments=[
            ("scan.zip", "application/zip", zip_of({"scan.pdf.exe": pe_executable()}))]), 550, "5.7.1")
        self.assert_delivered(server, message("scan", attachments=[("scan.pdf", "application/pdf", PDF)]))

    # ---- spam

    def test_gtube_is_spam_and_quarantined(self):
        server = self.gateway()
        held = self.assert_held(server, message("gtube", body=GTUBE), "GTUBE=1000.0")
        # GTUBE plus whatever the weighted rules add (its line is in capitals).
        self.assertRegex(held["verdict"], r"; spam=100\d\.\d;")

    def test_spam_tagged_when_so_configured(self):
        server = self.gateway(actions={"spam": "tag"}, subject_tag="[SPAM]")
        reply = self.send(server, message("gtube", body=GTUBE))
        self.assertEqual(reply.code, 250)
        [delivered] = server.wait_for_messages(1)
        self.assertTrue(delivered.filter_headers["X-mxgate-Verdict"].startswith("tag;"))
        self.assertEqual(delivered.filter_headers["X-Spam-Flag"], "YES")
        self.assertRegex(delivered.filter_headers["X-Spam-Status"], r"^Yes, score=100\d\.\d required=5\.0")
        self.assertIn(b"Subject: [SPAM] gtube", delivered.content)

    def test_bayes_trained_with_mxgate_learn_flags_spam_and_passes_ham(self):
        server = self.gateway(bayes_db="bayes.sqlite", bayes_min_spam=20, bayes_min_ham=20,
                              actions={"spam": "quarantine"})
        d = Path(tempfile.mkdtemp(prefix="mxgate-learn-"))
        self.addCleanup(shutil.rmtree, d, True)
        spam_words = ["casino", "jackpot", "pills", "discount", "winner", "bitcoin", "unsubscribe", "lottery"]
        ham_words = ["agenda", "meeting", "project", "review", "minutes", "deadline", "budget", "colleagues"]
        spam_files, ham_files = [], []
        for i in range(30):
            for kind, words, files in (("spam", spam_words, spam_files), ("ham", ham_words, ham_files)):
                path = d / f"{kind}{i}.eml"
                body = " ".join(words[(i + k) % len(words)] for k in range(12)) + f" item{i}\n"
                path.write_bytes(message(f"{words[i % len(words)]} {i}", body=body))
                files.append(str(path))
        for flag, files in (("--spam", spam_files), ("--ham", ham_files)):
            out = run([str(BINARY), "learn", flag, *files, "--config", str(server.config_path)], text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("the store holds 30 spam and 30 ham", out.stdout)
        self.assert_held(server, message("winner", body="casino jackpot lottery winner pills discount\n"),
                         "BAYES_")
        server.wait_for_log(r"filter: Bayes store \S+: 30 spam, 30 ham")
        delivered = self.assert_delivered(server, message("minutes", body="meeting agenda budget review\n"))
        self.assertIn("BAYES_", delivered.filter_headers["X-mxgate-Verdict"])

    # ---- phishing and impersonation

    def test_lookalike_domain_phishing_is_refused_and_its_twin_passes(self):
        server = self.gateway()
        phish = message("Your mailbox", html='<p>Sign in: <a href="https://examp1e.test/login">'
                                              "https://example.test/login</a></p>")
        self.assert_refused(server, phish, 550, "Message refused as phishing")
        server.wait_for_log(r"action=reject .*rules=.*(LOOKALIKE_URL|LINK_TEXT_MISMATCH)")
        twin = message("Your mailbox", html='<p>Sign in: <a href="https://example.test/login">'
                                             "https://example.test/login</a></p>")
        self.assert_delivered(server, twin)

    def test_ceo_impersonation_is_held_and_the_real_ceo_passes(self):
        server = self.gateway()
        fake = message("Urgent wire transfer", body="Please pay the attached invoice today.",
                       sender="Alice Martin <alice.martin.ceo@gmail.com>")
        self.assert_held(server, fake, "PROTECTED_NAME_EXTERNAL")
        real = message("Board meeting", body="See you at ten.", sender="Alice Martin <alice@example.test>")
        self.assert_delivered(server, real)

    # ---- failures are never a pass

    def test_clamd_down_tempfails_and_nothing_is_kept(self):
        bed = ClamdBed(max_stream=1 << 20)
        self.addCleanup(bed.close)
        bed.start()
        server = start_server(self, filter_config(bed))
        bed.stop()
        content = message("while clamd is down", attachments=[("a.txt", "text/plain", b"fine\n")])
        reply = self.assert_refused(server, content, 451, "4.7.1")
        self.assertEqual(reply.lines[-1], "4.7.1 Message could not be scanned; try again later")
        server.wait_for_log(r"action=tempfail .*failed=\"clamd: ")
        bed.start()
        self.assert_delivered(server, content)

    def test_a_hung_clamd_is_cut_off_by_the_time_budget(self):
        # A listener that accepts and never answers: the verdict must still
        # come within the budget, as a tempfail.
        path = Path(tempfile.mkdtemp(prefix="mxgate-hung-")) / "clamd.sock"
        self.addCleanup(shutil.rmtree, path.parent, True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(16)
        self.addCleanup(listener.close)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept():
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(listener.accept()[0])
                except OSError:
                    continue
        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        self.addCleanup(lambda: (stop.set(), thread.join(5), [s.close() for s in held]))
        config = filter_config(None, clamd=f"unix:{path}", time_budget=2)
        server = start_server(self, config)
        started = time.monotonic()
        reply = self.send(server, message("hung"))
        self.assertEqual(reply.code, 451, str(reply))
        self.assertLess(time.monotonic() - started, 30)  # bounded by the budget, not the 300 s data timeout
        server.wait_for_log(r"action=tempfail .*failed=\"(filter: time budget of 2 s spent|clamd: )")

    # ---- weighted spam rules

    def test_operator_rules_file_and_rule_scores(self):
        d = Path(tempfile.mkdtemp(prefix="mxgate-rules-"))
        self.addCleanup(shutil.rmtree, d, True)
        rules = d / "local.toml"
        rules.write_text("[[rule]]\nname = \"REPLICA_WATCHES\"\ntarget = \"body\"\n"
                         "pattern = 'replica\\s+watch'\nflags = \"i\"\nscore = 6.0\n"
                         "description = \"sells fake watches\"\n\n"
                         "[[rule]]\nname = \"SUBJ_WATCH\"\ntarget = \"header\"\nfield = \"Subject\"\n"
                         "pattern = 'watch'\nscore = 0.5\n")
        spam = message("a watch for you", body="Fine Replica  Watches, cheap.")
        server = self.gateway(rules=str(rules))
        held = self.assert_held(server, spam, "REPLICA_WATCHES")
        self.assertIn("SUBJ_WATCH", held["verdict"])
        self.assertIn("spam=6.5", held["verdict"])
        server.wait_for_log(r"2 spam rules from " + re.escape(str(rules)))
        # The operator turns the rule off: the same message is delivered.
        server = self.gateway(rules=str(rules), rule_scores={"REPLICA_WATCHES": 0})
        delivered = self.assert_delivered(server, spam)
        self.assertIn("SUBJ_WATCH", delivered.filter_headers["X-mxgate-Verdict"])
        self.assertNotIn("REPLICA_WATCHES", delivered.filter_headers["X-mxgate-Verdict"])

    def test_built_in_rules_decide_alone_until_the_classifier_has_learned(self):
        server = self.gateway()
        server.wait_for_log(r"\d+ spam rules \(built-in\)")
        html = ("<html><body><center><font size='+4' color='red'>Dear Friend!!!</font><p>Earn up to "
                "$5,000 a week working from home. To be removed from our list "
                "<a href='http://192.0.2.9/remove.cgi'>click here</a>.</p></center></body></html>")
        # No Bayes store: the rules' score_no_bayes scores apply, and a
        # classic spam reaches the threshold on rules alone.
        held = self.assert_held(server, message("MAKE MONEY FAST", body="Dear Friend", html=html,
                                                headers={"X-Priority": "1", "Reply-To": "cash@hotmail.com"}),
                                "BODY_DEAR_FRIEND")
        for rule in ("SUBJ_ALL_CAPS", "X_PRIORITY_HIGH", "REPLY_TO_FREEMAIL", "URI_IP"):
            self.assertIn(rule, held["verdict"])
        # A reply between colleagues scores below zero and passes.
        delivered = self.assert_delivered(server, message(
            "Re: minutes", body="Bob wrote:\n> can you send the minutes?\n\nAttached, see you Monday.\n",
            headers={"In-Reply-To": "<minutes@partner.test>", "User-Agent": "Mutt/2.2.9"}))
        self.assertIn("HAM_IN_REPLY_TO", delivered.filter_headers["X-mxgate-Verdict"])
        self.assertRegex(delivered.filter_headers["X-mxgate-Verdict"], r"; spam=-\d")

    def test_rules_that_do_not_compile_stop_check_config_naming_the_rule(self):
        d = Path(tempfile.mkdtemp(prefix="mxgate-rules-"))
        self.addCleanup(shutil.rmtree, d, True)
        (d / "bad.toml").write_text("[[rule]]\nname = \"BACKREF\"\ntarget = \"body\"\n"
                                    "pattern = '(a)\\1'\nscore = 1\n")
        (d / "mxgate.toml").write_text(
            'hostname = "mx.example.test"\nspool = "spool"\naccept_domains = ["example.test"]\n'
            '[[listener]]\naddress = "127.0.0.1:2525"\ntls = "none"\n[filter]\nrules = "bad.toml"\n')
        out = run([str(BINARY), "check-config", "--config", str(d / "mxgate.toml")], text=True)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("filter.rules: " + str(d / "bad.toml") + ": rule BACKREF: ", out.stderr)
        (d / "mxgate.toml").write_text((d / "mxgate.toml").read_text().replace(
            'rules = "bad.toml"', '[filter.rule_scores]\nNO_SUCH_RULE = 1'))
        out = run([str(BINARY), "check-config", "--config", str(d / "mxgate.toml")], text=True)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('filter.rule_scores: no rule named "NO_SUCH_RULE"', out.stderr)

    def test_filter_off_adds_nothing(self):
        server = start_server(self, {"accept_domains": ["example.test"], "filter": {"enabled": False}})
        reply = self.send(server, message("gtube", body=GTUBE))
        self.assertEqual(reply.code, 250)
        [delivered] = server.wait_for_messages(1)
        self.assertEqual(delivered.filter_headers, {})
        server.wait_for_log(r"filter: disabled")


class CheckCommandTest(unittest.TestCase):
    """`mxgate check FILE`: the verdict and every finding, without a gateway."""

    def test_check_reports_findings_as_json(self):
        d = Path(tempfile.mkdtemp(prefix="mxgate-check-"))
        self.addCleanup(shutil.rmtree, d, True)
        (d / "mxgate.toml").write_text(
            'hostname = "mx.example.test"\nspool = "spool"\naccept_domains = ["example.test"]\n'
            '[[listener]]\naddress = "127.0.0.1:2525"\ntls = "none"\n'
            '[filter]\nprotected_names = ["Alice Martin"]\n')
        (d / "mail.eml").write_bytes(message("gtube", body=GTUBE, sender="Alice Martin <ceo@evil.test>"))
        out = run([str(BINARY), "check", str(d / "mail.eml"), "--json", "--config", str(d / "mxgate.toml")], text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        report = json.loads(out.stdout)
        self.assertEqual(report["action"], "quarantine")
        self.assertEqual(sorted(report["triggered"]), ["impersonation", "spam"])
        rules = {f["rule"] for f in report["findings"]}
        self.assertIn("GTUBE", rules)
        self.assertIn("PROTECTED_NAME_EXTERNAL", rules)
        self.assertEqual(report["failures"], [])
        text = run([str(BINARY), "check", str(d / "mail.eml"), "--config", str(d / "mxgate.toml")], text=True)
        self.assertRegex(text.stdout, r"^verdict: action=quarantine spam=100\d\.\d/5\.0")
        # Several files: one report each, in order, each judged alone.
        (d / "clean.eml").write_bytes(message("hello", body="See you at ten."))
        out = run([str(BINARY), "check", str(d / "mail.eml"), str(d / "clean.eml"), str(d / "mail.eml"),
                   "--json", "--config", str(d / "mxgate.toml")], text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        actions = [json.loads(line)["action"] for line in out.stdout.splitlines()]
        self.assertEqual(actions, ["quarantine", "accept", "quarantine"])


if __name__ == "__main__":
    unittest.main()
