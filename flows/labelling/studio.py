"""A small Label Studio client over plain HTTP (`requests`; the SDK would pull opencv into our lock).

Every failure is a `StudioError` whose one line names the URL and what to check: a server that does not
answer, a refused token, an unexpected status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

TIMEOUT_S = 30


class StudioError(RuntimeError):
    """Label Studio cannot be used; the message names its URL and what to check."""


@dataclass
class Studio:
    url: str
    token: str

    def call(self, method: str, path: str, **kwargs) -> Any:
        target = f"{self.url}/api/{path}"
        try:
            response = requests.request(method, target, headers={"Authorization": f"Token {self.token}"},
                                        timeout=TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise StudioError(f"Label Studio at {self.url} does not answer ({type(exc).__name__}): is it up? "
                              "`flowtune services up --with label-studio`, `flowtune services status`") from None
        if response.status_code in (401, 403):
            raise StudioError(f"Label Studio at {self.url} refused the API token (HTTP {response.status_code}): check "
                              "FLOWTUNE_LABEL_STUDIO_TOKEN in .env")
        if response.status_code >= 400:
            raise StudioError(f"Label Studio at {self.url}: {method} /api/{path} answered HTTP {response.status_code}: "
                              f"{response.text[:300]}")
        return response.json() if response.content else None

    def find_project(self, title: str) -> dict | None:
        page = self.call("GET", "projects", params={"title": title, "page_size": 1000})
        projects = page.get("results", []) if isinstance(page, dict) else page
        return next((p for p in projects if p.get("title") == title), None)

    def ensure_project(self, title: str, label_config: str) -> tuple[dict, bool]:
        """The project named `title`, created with `label_config` when missing; (project, created)."""
        found = self.find_project(title)
        if found is not None:
            return found, False
        return self.call("POST", "projects", json={"title": title, "label_config": label_config}), True

    def import_tasks(self, project_id: int, tasks: list[dict]) -> int:
        if not tasks:
            return 0
        answer = self.call("POST", f"projects/{project_id}/import", json=tasks)
        return int(answer.get("task_count", len(tasks))) if isinstance(answer, dict) else len(tasks)

    def export(self, project_id: int, all_tasks: bool = False) -> list[dict]:
        """The project's tasks with their annotations (JSON export); only annotated ones unless `all_tasks`."""
        return self.call("GET", f"projects/{project_id}/export",
                         params={"exportType": "JSON", "download_all_tasks": "true" if all_tasks else "false"})

    def annotate(self, task_id: int, result: list[dict]) -> dict:
        return self.call("POST", f"tasks/{task_id}/annotations", json={"result": result})


def studio_from_settings(settings) -> Studio:
    """The client of the configured Label Studio (local or FLOWTUNE_LABEL_STUDIO_URL) with the token of `.env`."""
    token = settings.label_studio_token
    if token is None:
        raise StudioError(f"no API token for Label Studio at {settings.labelling_url}: set FLOWTUNE_LABEL_STUDIO_TOKEN "
                          "in .env (`flowtune services up --with label-studio` generates it)")
    return Studio(settings.labelling_url, token.get_secret_value())
