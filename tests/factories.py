from __future__ import annotations

from typing import Any

import factory

from plgapp.models import Tenant, TenantMember, User
from plgapp.roles import Role

PASSWORD = "correct-horse-battery-staple"


class TenantFactory(factory.django.DjangoModelFactory[Tenant]):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"person{n}@example.test")

    @classmethod
    def _create(cls, model_class: type[User], *args: Any, **kwargs: Any) -> User:
        password = kwargs.pop("password", PASSWORD)
        return model_class.objects.create_user(email=kwargs.pop("email"), password=password, **kwargs)


class TenantMemberFactory(factory.django.DjangoModelFactory[TenantMember]):
    class Meta:
        model = TenantMember

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ADMIN

    @classmethod
    def _create(cls, model_class: type[TenantMember], *args: Any, **kwargs: Any) -> TenantMember:
        tenant = kwargs.pop("tenant")
        return model_class.objects.for_tenant(tenant).create(**kwargs)
