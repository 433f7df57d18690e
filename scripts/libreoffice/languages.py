"""The languages: Debian's help packages, the canonical order, the package and folder names."""
from pathlib import Path

SCRIPT_VERSION = 3  # bump when the output for the same options changes
DEFAULT_LANGS = ("fr", "cs", "tr", "hi")  # the paper's Table 1 languages; English is the pivot
# Debian (bookworm) ships libreoffice-help-<package> for these besides en-us, the English
# pivot. A language's code here (and in fairseq: file names, --lang-pairs, --lang-dict) is
# the package suffix with '-' -> '_' (zh-cn -> zh_cn), because fairseq splits a direction
# such as zh_cn-en on '-'. Not every package carries help of its own: -sk is a link to the
# Czech help (refused below), and dz, km, om are only partly translated.
DEBIAN_HELP_PACKAGES = ("ca", "cs", "da", "de", "dz", "el", "en-gb", "es", "et", "eu", "fi",
                        "fr", "gl", "hi", "hu", "id", "it", "ja", "km", "ko", "nl", "om", "pl",
                        "pt", "pt-br", "ru", "sk", "sl", "sv", "tr", "vi", "zh-cn", "zh-tw")
# canonical order (language-dictionary order, a-b in file names): the default four first,
# as they always were, then the others alphabetically
ALL_LANGS = DEFAULT_LANGS + tuple(sorted(
    set(p.replace("-", "_") for p in DEBIAN_HELP_PACKAGES) - set(DEFAULT_LANGS)))
SPLITS = ("train", "valid", "test")
HELDOUT_PAIRS = ("all", "english")
HELP_SUBDIR = Path("usr/share/libreoffice/help")
L10N_SUBDIR = Path("usr/lib/libreoffice/program/resource")


def package_name(code):
    """Debian package suffix of a language code: zh_cn -> zh-cn, en -> en-us."""
    return "en-us" if code == "en" else code.replace("_", "-")


def lang_dir(code):
    """The language's directory name inside the packages (help and l10n resources):
    en -> en-US, zh_cn -> zh-CN, pt_br -> pt-BR, fr -> fr."""
    if code == "en":
        return "en-US"
    base, _, region = code.partition("_")
    return base + ("-" + region.upper() if region else "")
