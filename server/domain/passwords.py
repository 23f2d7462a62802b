"""What makes a new password too easy to guess, beyond its length (NIST SP 800-63B §5.1.1.2: refuse
passwords known to be common, and ones made of the account's own name).

Accounts here open households' ID numbers, health and addresses, and a guesser gets a few tries a
device before the lockout: the few passwords people pick first must not be among them.
"""

from __future__ import annotations

from server.errors import Invalid

COMMON = frozenset(
    {
        "00000000", "11111111", "12121212", "123123123", "12341234", "12344321", "12345678",
        "123456789", "1234567890", "123456abc", "123qweasd", "1q2w3e4r", "1qaz2wsx", "5201314520",
        "66666666", "77777777", "87654321", "88888888", "99999999", "a1234567", "a12345678",
        "aa123456", "abc12345", "abc123456", "abcd1234", "admin123", "admin1234", "asdf1234",
        "asdfghjk", "baseball", "changeme", "dragon123", "football", "iloveyou", "letmein1",
        "password", "password1", "password123", "passw0rd", "p@ssw0rd", "q1w2e3r4", "qazwsxedc",
        "qwe12345", "qwer1234", "qwerty12", "qwerty123", "qwertyui", "sunshine", "welcome1",
        "woaini1314", "woaini520", "zxcvbnm1", "zxcvbnm123",
    }
)  # fmt: skip
"""The most common passwords of eight characters or more, in English- and Chinese-speaking leaks."""


def weakness(password: str, username: str | None = None) -> str | None:
    """Why `password` is too easy to guess for the account `username`, or None."""
    folded = password.casefold()
    if folded in COMMON:
        return "one of the most common passwords"
    if len(set(folded)) == 1:
        return "one character repeated"
    name = (username or "").casefold()
    if len(name) >= 3 and name in folded:
        return "it contains the username"
    return None


def require_strong(password: str, username: str | None, field: str) -> None:
    """422 `weak_password`, naming `field`, for a password `weakness` finds fault with."""
    if why := weakness(password, username):
        raise Invalid(
            f"This password is too easy to guess: {why}. Choose another.",
            code="weak_password",
            details=[{"field": field, "message": why}],
        )
