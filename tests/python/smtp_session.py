#!/usr/bin/env python3
"""Drives one SMTP session with Python's smtplib, for Postern's whole-system tests.

Usage: smtp_session.py PORT HELO [SOURCE_ADDRESS] < steps

Each line of standard input is one step:
    ehlo | helo | rset | noop | quit
    mail ADDRESS [OPTION ...]     (ADDRESS "-" is the null sender <>)
    rcpt ADDRESS [OPTION ...]
    data FILE                     (the message, sent as bytes: smtplib dot-stuffs it)
Each step prints one line: STEP <tab> CODE <tab> TEXT (reply lines joined by " | ").
The connection's greeting is printed as the step "connect". A step that fails
with an exception prints CODE 0 and the exception, and ends the session.
"""

import smtplib
import sys


def show(step, code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).replace("\r", "").replace("\n", " | ")
    print(f"{step}\t{code}\t{text}", flush=True)


def main():
    port = int(sys.argv[1])
    helo = sys.argv[2]
    source = (sys.argv[3], 0) if len(sys.argv) > 3 else None
    smtp = smtplib.SMTP(local_hostname=helo, source_address=source, timeout=60)
    code, text = smtp.connect("127.0.0.1", port)
    show("connect", code, text)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        step, args = words[0], words[1:]
        try:
            if step == "ehlo":
                code, text = smtp.ehlo()
            elif step == "helo":
                code, text = smtp.helo()
            elif step == "rset":
                code, text = smtp.rset()
            elif step == "noop":
                code, text = smtp.noop()
            elif step == "quit":
                code, text = smtp.quit()
            elif step == "mail":
                address = "" if args[0] == "-" else args[0]
                code, text = smtp.mail(address, args[1:])
            elif step == "rcpt":
                code, text = smtp.rcpt(args[0], args[1:])
            elif step == "data":
                with open(args[0], "rb") as f:
                    message = f.read()
                code, text = smtp.data(message)
            else:
                raise ValueError(f"unknown step {step!r}")
        except smtplib.SMTPResponseException as e:
            show(step, e.smtp_code, e.smtp_error)
            continue
        except Exception as e:  # the session is over: say why
            show(step, 0, f"{type(e).__name__}: {e}")
            return
        show(step, code, text)


if __name__ == "__main__":
    main()
