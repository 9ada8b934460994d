"""Login, logout and the own profile."""

import asyncio

from core4.api import auth, role, token
from core4.api.errors import ApiError, login_required
from core4.api.handler import CoreRequestHandler


class LoginHandler(CoreRequestHandler):
    """``POST /login`` with ``{username, password}`` (or ``GET`` with HTTP
    Basic credentials): answer a token and set the login cookie."""

    public = True

    async def post(self):
        """Log in with username and password."""
        name = self.get_argument("username", as_type=str)
        password = self.get_argument("password", as_type=str)
        user = await self.run(role.authenticate, self.context.system, name,
                              password)
        if user is None:
            await asyncio.sleep(0.2)  # slows down guessing
            raise login_required("wrong username or password")
        await self._issue(user)

    async def get(self):
        """Log in with the credentials the request carries."""
        if self.user is None:
            raise login_required(scheme="Basic")
        await self._issue(self.user)

    async def _issue(self, user):
        value, expires = token.create_token(user, self.context.secrets["jwt"],
                                            self.context.config)
        await self.run(role.touch_login, self.context.system, user)
        auth.set_cookie(self, value)
        self.reply({"token": value, "expires": expires,
                    "username": user["name"]})


class LogoutHandler(CoreRequestHandler):
    """``POST /logout``: remove the login cookie."""

    public = True

    def post(self):
        """Log out (tokens stay valid until they expire or the password
        changes)."""
        auth.clear_cookie(self)
        self.reply({"logout": True})


class ProfileHandler(CoreRequestHandler):
    """``GET /profile``: the own user with effective permissions;
    ``PUT /profile`` with ``{password, new_password}``: change the own
    password (every token issued before becomes invalid)."""

    access = "user"

    def get(self):
        """Answer the own user."""
        data = role.public(self.user)
        data["effective_permissions"] = self.permissions.strings
        self.reply(data)

    async def put(self):
        """Change the own password; answer a new token."""
        unknown = self.argument_names() - {"password", "new_password"}
        if unknown:
            raise ApiError(400, "unknown argument(s): %s" % ", ".join(
                sorted(unknown)))
        old = self.get_argument("password", as_type=str)
        new = self.get_argument("new_password", as_type=str)
        updated = await self.run(role.change_password, self.context.system,
                                 self.user, old, new)
        user = await self.run(role.get, self.context.system, updated["_id"])
        value, expires = token.create_token(user, self.context.secrets["jwt"],
                                            self.context.config)
        auth.set_cookie(self, value)
        self.reply({"token": value, "expires": expires,
                    "username": user["name"]})
