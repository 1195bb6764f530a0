#!/usr/bin/env python3
"""Parses a delivered message as a delivery status notification with Python's `email` package,
for Postern's whole-system tests.

Usage: dsn_report.py FILE

Prints one line per fact, fields separated by tabs:
    content-type    TYPE            (of the whole message)
    report-type     VALUE           (the report-type parameter, or "-")
    part            TYPE            (each top-level part, in order)
    message         NAME   VALUE    (each per-message field of the delivery-status part)
    recipient       N      NAME   VALUE   (each per-recipient field, N counting from 0)
    returned        TYPE            (the type of the returned message or headers part)
Exits 1 with a message on standard error if the file is not a multipart message.
"""

import email
import email.policy
import sys


def clean(value):
    return " ".join(str(value).split())


def main():
    with open(sys.argv[1], "rb") as f:
        message = email.message_from_binary_file(f, policy=email.policy.compat32)
    print(f"content-type\t{message.get_content_type()}")
    print(f"report-type\t{message.get_param('report-type') or '-'}")
    if not message.is_multipart():
        print("not a multipart message", file=sys.stderr)
        return 1
    for part in message.get_payload():
        kind = part.get_content_type()
        print(f"part\t{kind}")
        if kind == "message/delivery-status":
            # compat32 parses the status part as a list of header blocks: the per-message
            # block first, then one block per recipient.
            blocks = part.get_payload()
            for name, value in blocks[0].items():
                print(f"message\t{name}\t{clean(value)}")
            for n, block in enumerate(blocks[1:]):
                for name, value in block.items():
                    print(f"recipient\t{n}\t{name}\t{clean(value)}")
        elif kind in ("message/rfc822", "text/rfc822-headers"):
            print(f"returned\t{kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
