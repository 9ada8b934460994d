"""Login, logout and the own profile.

Password logins are throttled (:mod:`core4.api.throttle`) and checked
in the app server's password pool (429 when it is full); successful
logins are logged in one line and emitted as ``login`` events (channel
``auth``), locks as ``login_locked``.
"""

import asyncio

from core4.api import auth, role, throttle, token
from core4.api.errors import ApiError, login_required
from core4.api.handler import CoreRequestHandler
from core4.api.v1.contract.roles import LOGIN, PROFILE


class LoginHandler(CoreRequestHandler):
    """``POST /login`` with ``{username, password}`` (or ``GET`` with HTTP
    Basic credentials): answer a token and set the login cookie; 429
    while failed logins lock the user or the address."""

    public = True
    #: HTTP Basic is taken by GET (a public route otherwise ignores it)
    basic = ("GET",)

    async def post(self):
        """Log in with username and password (a JSON or a form body)."""
        fields = self.body(LOGIN)
        name, secret = fields["username"], fields["password"]
        address = throttle.client_address(self)
        gate = throttle.throttle_of(self.context)
        refusal = gate.check(name, address)
        if refusal is not None:
            raise auth.throttled(refusal)
        user = await self.run(role.find_user, self.context.system, name)
        if not await self.context.passwords.verify_async(
                user.get("password") if user else None, secret):
            user = None
        if user is None:
            await self.run(throttle.report_failure, self.context, name,
                           address, "password")
            # slows down guessing, more with each failure
            await asyncio.sleep(max(0.2, gate.delay_after(name, address)))
            raise login_required("wrong username or password")
        gate.succeeded(name, address)
        await self._issue(user, "password")

    async def get(self):
        """Log in with the credentials the request carries."""
        if self.user is None:
            raise login_required(scheme="Basic")
        header = self.request.headers.get("Authorization", "")
        await self._issue(self.user, "basic" if header.lower().startswith(
            "basic ") else "token")

    async def _issue(self, user, via):
        value, expires = token.create_token(user, self.context.secrets["jwt"],
                                            self.context.config)
        await self.run(role.touch_login, self.context.system, user)
        await self.run(throttle.report_login, self.context, user["name"],
                       throttle.client_address(self), via)
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
    password (every token issued before becomes invalid); a wrong current
    password counts as a failed login (429 when locked)."""

    access = "user"

    def get(self):
        """Answer the own user."""
        data = role.public(self.user)
        data["effective_permissions"] = self.permissions.strings
        self.reply(data)

    async def put(self):
        """Change the own password; answer a new token. A wrong current
        password counts as a failed login."""
        fields = self.body(PROFILE)
        old, new = fields["password"], fields["new_password"]
        name = self.user["name"]
        address = throttle.client_address(self)
        gate = throttle.throttle_of(self.context)
        refusal = gate.check(name, address)
        if refusal is not None:
            raise auth.throttled(refusal)
        if not await self.context.passwords.verify_async(
                self.user.get("password"), old):
            await self.run(throttle.report_failure, self.context, name,
                           address, "profile")
            raise ApiError(400, "the current password is wrong")
        gate.succeeded(name, address)
        hashed = await self.context.passwords.hash_async(new)
        updated = await self.run(role.replace_password, self.context.system,
                                 self.user, hashed)
        user = await self.run(role.get, self.context.system, updated["_id"])
        value, expires = token.create_token(user, self.context.secrets["jwt"],
                                            self.context.config)
        auth.set_cookie(self, value)
        self.reply({"token": value, "expires": expires,
                    "username": user["name"]})
