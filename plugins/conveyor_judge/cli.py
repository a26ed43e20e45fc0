"""``conveyor judge …``: problems, submissions, languages, self-test."""
import click


@click.group()
def judge() -> None:
    """Language judges: problems, submissions, verdicts."""
