"""Languages of the public pages: which exist, which one a request gets, their translations.

English is the source language. Every ``hotline/locale/<code>/LC_MESSAGES/messages.po``
adds a language: nothing else needs to change. Catalogues are read and compiled in
memory on first use (no ``.mo`` files in the repository); fuzzy entries are left out,
so an unreviewed translation falls back to English.

The choice of language is never stored on the reporter's side: no cookie, only an
explicit ``lang`` parameter (links and forms carry it) or the Accept-Language header.
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LANGUAGE = "en"
DOMAIN = "messages"
# Longest Accept-Language header we bother to read; browsers send a few dozen bytes.
MAX_ACCEPT_LANGUAGE = 1024


@dataclass(frozen=True)
class Language:
    code: str
    """BCP 47 tag as used in ``lang`` attributes and ``?lang=``, e.g. ``uk`` or ``pt-BR``."""
    name: str
    """The language's name in that language, e.g. ``Українська``."""
    direction: str
    """``ltr`` or ``rtl``."""


def _tag(directory_name: str) -> str:
    return directory_name.replace("_", "-")


def _describe(code: str) -> Language:
    try:
        locale = Locale.parse(code, sep="-")
    except (ValueError, UnknownLocaleError):
        return Language(code, code, "ltr")
    name = locale.get_display_name(locale) or code
    return Language(code, name[:1].upper() + name[1:], locale.text_direction)


def compile_catalogue(po_path: Path) -> Translations:
    """Read a .po file and compile it in memory, without fuzzy entries."""
    with po_path.open("rb") as po_file:
        catalogue = read_po(po_file, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalogue, use_fuzzy=False)
    compiled.seek(0)
    return Translations(fp=compiled, domain=DOMAIN)


def catalogue_paths(locale_dir: Path = LOCALE_DIR) -> dict[str, Path]:
    """Language tag → its .po file, for every catalogue directory present."""
    return {
        _tag(po.parents[1].name): po for po in sorted(locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    }


@lru_cache
def translations() -> Mapping[str, gettext.NullTranslations]:
    """Every available language with its compiled translations; English needs no catalogue."""
    found: dict[str, gettext.NullTranslations] = {SOURCE_LANGUAGE: gettext.NullTranslations()}
    for code, path in catalogue_paths().items():
        found[code] = compile_catalogue(path)
    return found


@lru_cache
def available_languages() -> tuple[Language, ...]:
    """The source language first, then the others by tag."""
    codes = sorted(translations(), key=lambda code: (code != SOURCE_LANGUAGE, code.lower()))
    return tuple(_describe(code) for code in codes)


def _match(tag: str, codes: Mapping[str, str]) -> str | None:
    tag = tag.strip().replace("_", "-").lower()
    if not tag or tag == "*":
        return None
    if tag in codes:
        return codes[tag]
    primary = tag.split("-", 1)[0]
    if primary in codes:
        return codes[primary]
    # "pt" asked, only "pt-BR" present: still better than the default.
    return next((code for key, code in codes.items() if key.split("-", 1)[0] == primary), None)


def accepted_languages(header: str | None) -> list[str]:
    """Language tags of an Accept-Language header, most preferred first (q=0 dropped)."""
    if not header or len(header) > MAX_ACCEPT_LANGUAGE:
        return []
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag.strip() and 0 < quality <= 1:
            weighted.append((-quality, position, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate(explicit: str | None, accept_language: str | None, default: str) -> str:
    """The language for a request: an explicit choice we have, else the browser's, else default."""
    codes = {code.lower(): code for code in translations()}
    if explicit and (chosen := _match(explicit, codes)):
        return chosen
    for tag in accepted_languages(accept_language):
        if chosen := _match(tag, codes):
            return chosen
    return _match(default, codes) or SOURCE_LANGUAGE


def language(code: str) -> Language:
    return next((lang for lang in available_languages() if lang.code == code), _describe(code))


class Templates:
    """Jinja2 templates of one directory (or several, searched in order), one environment
    per language (``jinja2.ext.i18n``).

    Environments are cached: each holds its language's gettext callables, so no
    request ever sees another request's language.
    """

    def __init__(self, directory: Path | list[Path]) -> None:
        self.directory = directory
        self._environments: dict[str, Environment] = {}

    def environment(self, code: str) -> Environment:
        environment = self._environments.get(code)
        if environment is None:
            environment = Environment(
                loader=FileSystemLoader(self.directory),
                autoescape=select_autoescape(["html"]),
                extensions=["jinja2.ext.i18n"],
                undefined=StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            # Must match `trimmed = true` in babel.cfg, or msgids would differ.
            environment.policies["ext.i18n.trimmed"] = True
            catalogue = translations().get(code, gettext.NullTranslations())
            environment.install_gettext_translations(catalogue, newstyle=True)  # type: ignore[attr-defined]
            self._environments[code] = environment
        return environment

    def render(self, name: str, code: str, **context: Any) -> str:
        return self.environment(code).get_template(name).render(**context)
