"""Who is calling the key store, and what they may see and change."""

from dataclasses import dataclass

from keytrail.keystore.errors import KeyNotFound, PermissionDenied


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller's scope: an admin (every project) or one project, read-only or read-write.

    A project-scoped caller never learns that another project's key exists: reading or changing
    one raises `KeyNotFound`; asking to create or list in another project raises `PermissionDenied`.
    """

    actor: str
    project_id: str | None = None
    can_write: bool = False

    @classmethod
    def admin(cls, actor: str = "admin") -> "Caller":
        """Full access to every project (the local CLI, the projector, the sweeper)."""
        return cls(actor=actor, project_id=None, can_write=True)

    @classmethod
    def system(cls, actor: str = "system") -> "Caller":
        """The in-process system (projector, sweeper): an admin under a system actor name."""
        return cls.admin(actor)

    @classmethod
    def project(cls, project_id: str, actor: str, *, write: bool = False) -> "Caller":
        """A caller confined to one project (an API token of that project)."""
        return cls(actor=actor, project_id=project_id, can_write=write)

    @property
    def is_admin(self) -> bool:
        """True when the caller is not confined to one project."""
        return self.project_id is None

    def sees(self, project_id: str) -> bool:
        """Whether keys of `project_id` are visible to this caller."""
        return self.project_id is None or self.project_id == project_id

    def check_read(self, key_id: str, project_id: str) -> None:
        """Refuse to reveal a key outside the caller's project (as if it did not exist)."""
        if not self.sees(project_id):
            raise KeyNotFound(key_id)

    def check_write(self, key_id: str, project_id: str) -> None:
        """Refuse to change a key outside the caller's project, or any key for a read-only caller."""
        self.check_read(key_id, project_id)
        self._require_write()

    def check_project_write(self, project_id: str) -> None:
        """Refuse to create keys in a project the caller does not hold write access to."""
        if not self.sees(project_id):
            raise PermissionDenied(
                f"{self.actor} may only manage keys of project {self.project_id!r}; "
                f"ask an admin to create keys in {project_id!r}"
            )
        self._require_write()

    def check_project_read(self, project_id: str | None) -> str | None:
        """The project a listing is confined to; refuses listing another project."""
        if self.project_id is None:
            return project_id
        if project_id is not None and project_id != self.project_id:
            raise PermissionDenied(
                f"{self.actor} may only list keys of project {self.project_id!r}; drop the project filter"
            )
        return self.project_id

    def _require_write(self) -> None:
        if not self.can_write:
            raise PermissionDenied(
                f"{self.actor} has read-only access; use credentials with write access to change keys"
            )
