"""Label Studio's REST API, the few calls a batch's round trip needs (checked against a 1.23.2 server, STACK.md).

    api = StudioApi("http://127.0.0.1:8080", api_key)
    project = api.project("demo", label_config_xml)            # created, or reused by title
    api.local_storage(project, Path("/data/pool"))              # a subfolder of the server's document root
    ids = api.import_tasks(project, tasks)                      # {sha256: task id}
    tasks = api.tasks(project)                                  # with their annotations, as an export holds them

label-studio-sdk pins opencv-python-headless < 4.13 (the lock has 5.0), so the documented REST API is spoken over
httpx; `Authorization: Token <key>` is the legacy API token (LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN on the server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

PAGE = 500  # tasks per page when listing


class StudioApi:
    def __init__(self, url: str, api_key: str, timeout_s: float = 60):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {api_key}"}, timeout=timeout_s)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise RuntimeError(f"Label Studio {method} {path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def project(self, title: str, label_config: str) -> int:
        """The id of the project titled `title`; created with `label_config` when there is none. A project whose
        config differs is refused: its annotations would not match the batch's names and labels."""
        found = self._json("GET", "/api/projects", params={"title": title, "page_size": 1000})
        for project in found.get("results", found) if isinstance(found, dict) else found:
            if project["title"] == title:
                if _squash(project["label_config"]) != _squash(label_config):
                    raise ValueError(f"Label Studio project {title!r} has another labeling config than this batch")
                return int(project["id"])
        return int(self._json("POST", "/api/projects", json={"title": title, "label_config": label_config})["id"])

    def local_storage(self, project: int, folder: Path) -> int:
        """The project's local-files storage on `folder` (registered once): what lets the server serve its images."""
        for storage in self._json("GET", "/api/storages/localfiles", params={"project": project}):
            if Path(storage["path"]) == folder:
                return int(storage["id"])
        body = {"project": project, "path": str(folder), "title": folder.name, "use_blob_urls": False}
        return int(self._json("POST", "/api/storages/localfiles", json=body)["id"])

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> dict[str, int]:
        """Import the batch (predictions attached); {sha256: task id} of the project's tasks afterwards."""
        self._json("POST", f"/api/projects/{project}/import", json=tasks)
        wanted = {t["data"]["sha256"] for t in tasks}
        return {t["data"]["sha256"]: int(t["id"]) for t in self.tasks(project) if t["data"].get("sha256") in wanted}

    def tasks(self, project: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (cancelled ones included), the shape of a JSON export."""
        out, page = [], 1
        while True:
            params = {"project": project, "fields": "all", "page": page, "page_size": PAGE}
            body = self._json("GET", "/api/tasks", params=params)
            out += body["tasks"]
            if len(out) >= body["total"] or not body["tasks"]:
                return out
            page += 1

    def annotate(
        self, task: int, result: list[dict[str, Any]], cancelled: bool = False, user: int | None = None
    ) -> int:
        """Submit an annotation as an annotator does (cancelled: the task skipped), on behalf of `user` when
        given (the key's own user otherwise); its id."""
        body = {"result": result, "was_cancelled": cancelled, **({"completed_by": user} if user else {})}
        return int(self._json("POST", f"/api/tasks/{task}/annotations", json=body)["id"])

    def user(self, email: str) -> int:
        """The id of the user with `email`, created (no password: cannot log in) when there is none."""
        for found in self._json("GET", "/api/users"):
            if found["email"] == email:
                return int(found["id"])
        return int(self._json("POST", "/api/users", json={"email": email, "username": email.split("@")[0]})["id"])


def _squash(xml: str) -> str:
    return "".join(xml.split())
