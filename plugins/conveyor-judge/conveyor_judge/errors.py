"""The judge's error codes: bad problems, unknown languages, missing toolchains."""

from __future__ import annotations

from conveyor.plugin_api import ErrorCode, JobError

SOURCE = "conveyor_judge"

CODES: tuple[ErrorCode, ...] = (
    ErrorCode("invalid_problem_package", False,
              "The problem package is not a readable zip or directory of tests, or has no test case, "
              "a .in without its .out/.ans, or a malformed problem.toml/problem.yaml.",
              "Fix the package as the message says (docs/judge.md lists the layouts) and add it again.", SOURCE),
    ErrorCode("unsafe_problem_package", False,
              "The problem package holds an absolute path, a '..' component or a symbolic link.",
              "Rebuild the zip from a plain directory (`cd problem && zip -r ../p.zip .`).", SOURCE),
    ErrorCode("problem_package_too_large", False,
              "The problem package unpacks to more files or bytes than the judge allows (zip bomb guard).",
              "Make the package smaller, or raise CONVEYOR_JUDGE_MAX_FILES / CONVEYOR_JUDGE_MAX_UNPACKED_MB.", SOURCE),
    ErrorCode("problem_not_found", False, "No problem with this id is in storage.",
              "Add it with `conveyor judge problem add ZIP` and submit with the id it prints.", SOURCE),
    ErrorCode("unknown_language", False, "The submission names a language no loaded plugin provides.",
              "Run `conveyor judge languages` and use one of the ids or aliases listed.", SOURCE),
    ErrorCode("language_unavailable", False,
              "The language is known but its toolchain is missing or unreachable by the sandbox on this worker.",
              "Run `conveyor doctor` on the worker host and install the toolchain it names.", SOURCE),
    ErrorCode("checker_compile_failed", False, "The problem's checker or interactor program does not compile.",
              "Fix the checker source in the package; the job's error message holds the compiler output.", SOURCE),
    ErrorCode("source_not_found", False,
              "payload.source_key names no stored source of the submitting job's tenant: it is absent, or it "
              "belongs to another tenant or to the judge (the two are not told apart).",
              "Store the source under submissions/{tenant}/ (conveyor_judge.sources.source_key) or as a file of "
              "the same tenant, and submit in that tenant.", SOURCE),
    ErrorCode("source_too_large", False,
              "The submitted source is larger than the judge accepts (1 MiB of UTF-8).",
              "Submit a smaller source; generated tables belong in the program's logic, not its text.", SOURCE),
)


class JudgeError(JobError):
    """A judge failure that is not the submission's verdict (bad problem, unknown language, …)."""
