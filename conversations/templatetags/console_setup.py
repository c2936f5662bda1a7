"""The dashboard's setup checklist and LINE quota, for those who may see the channels."""
from django import template

from ..checklist import SetupChecklist, setup_checklist

register = template.Library()


@register.simple_tag(takes_context=True)
def console_setup(context) -> SetupChecklist | None:
    request = context["request"]
    if not request.user.has_perm("conversations.view_linechannel"):
        return None
    return setup_checklist(request=request)
