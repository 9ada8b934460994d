"""Users and roles, for administrators (``cop``).

Updates and deletes need the ``etag`` the client read (as argument or in
an ``If-Match`` header): a stale one is refused with 409.
"""

from core4.api import role
from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler
from core4.api.v1.contract.roles import CREATE, UPDATE

ID = r"([0-9a-fA-F]{24})"


class _RoleBase(CoreRequestHandler):
    """What both role handlers share: admins only, the fields sent."""

    access = "admin"

    def _fields(self, body):
        """The fields sent, checked against ``body`` (``etag`` aside)."""
        return self.body(body, ignore=("etag",))


class RoleHandler(_RoleBase):
    """``GET /roles``: all users and roles; ``POST /roles``: create one."""

    async def get(self):
        """List users and roles (no secrets)."""
        self.reply(await self.run(role.listing, self.context.system))

    async def post(self):
        """Create a user (with email and password) or a role."""
        fields = self._fields(CREATE)
        self.reply(await self.run(role.create, self.context.system, fields,
                                  by=self.user["name"]), code=201)


class RoleItemHandler(_RoleBase):
    """``GET|PUT|DELETE /roles/<id>``."""

    async def get(self, _id):
        """Answer one user or role."""
        doc = await self.run(role.get, self.context.system, _id)
        self.set_header("ETag", '"%s"' % doc["etag"])
        self.reply(role.public(doc))

    async def put(self, _id):
        """Change fields of a user or role (``etag`` required)."""
        doc = await self.run(role.update, self.context.system, _id,
                             self._etag(), self._fields(UPDATE),
                             by=self.user["name"])
        self.set_header("ETag", '"%s"' % doc["etag"])
        self.reply(doc)

    async def delete(self, _id):
        """Delete a user or role (``etag`` required)."""
        if str(self.user["_id"]) == _id.lower():
            raise ApiError(400, "you cannot delete yourself")
        await self.run(role.delete, self.context.system, _id, self._etag(),
                       by=self.user["name"])
        self.reply({"_id": _id, "deleted": True})

    def _etag(self):
        header = self.request.headers.get("If-Match")
        if header:
            return header.strip().strip('"')
        etag = self.get_argument("etag", None, as_type=str)
        if not etag:
            raise ApiError(400, "etag is required (If-Match, or the "
                           "argument etag)", field="If-Match")
        return etag
