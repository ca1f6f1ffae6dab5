"""The web app's own words (buttons, headings) and each request's language and direction.

Labels of entities, fields, options and stages come from the setup in each of its
languages; the few words the app itself writes are here, in the languages the examples use.
A language without an entry here gets the English words around the setup's own labels.

The language of a page: `?lang=xx` (remembered in the `kt_lang` cookie), else the cookie,
else `Accept-Language`, matched against the setup's languages (api/language.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.requests import Request

from api.language import pick_language

COOKIE = "kt_lang"
#: languages written right to left (their primary subtag)
RTL = frozenset({"ar", "fa", "he", "ur", "ps", "dv", "yi", "ckb"})

_EN = {
    "entities": "Entities", "search": "Search", "filter": "Filter", "reset": "Clear",
    "new": "New", "edit": "Edit", "delete": "Delete", "save": "Save", "cancel": "Cancel",
    "next": "Next page", "first": "First page", "board": "Board", "funnel": "Funnel",
    "list": "List", "nothing": "Nothing here yet.", "from": "from", "to": "to",
    "yes": "Yes", "no": "No", "any": "any", "timeline": "Timeline",
    "comment": "Add a comment", "send": "Send", "stage": "Stage", "move": "Move to",
    "stale": "This record was changed by someone else; your changes were not saved. "
             "Its current values:",
    "reload": "Load the current version", "required": "required",
    "required_in": "required in", "shown": "shown", "more": "More", "sum": "Sum",
    "reached": "Reached", "conversion": "Conversion", "median_time": "Median time in stage",
    "forecast": "Forecast", "now": "Now", "records": "Records", "created": "Created",
    "sign_out": "Sign out", "confirm_delete": "Delete this record?", "language": "Language",
    "not_found": "Not found", "refused": "Refused", "all_of": "All",
    "choose": "choose…", "pipeline": "Pipeline", "links": "Links", "title": "Title",
    "apply": "Apply",
    "t_comment": "comment", "t_call": "call", "t_email": "e-mail", "t_meeting": "meeting",
    "t_stage": "stage", "t_change": "change", "t_record": "linked", "create": "created",
    "update": "changed", "log": "Log a call, e-mail or meeting", "subject": "Subject",
    "result": "Result", "kind": "Kind", "direction": "Direction", "in": "incoming",
    "out": "outgoing",
    "t_automation": "automation",
    "older": "Older", "newest": "Newest",
    "fill_in": "Fill them in",
}
_RU = {
    "entities": "Разделы", "search": "Поиск", "filter": "Фильтр", "reset": "Сбросить",
    "new": "Создать", "edit": "Изменить", "delete": "Удалить", "save": "Сохранить",
    "cancel": "Отмена", "next": "Следующая страница", "first": "Первая страница",
    "board": "Доска", "funnel": "Воронка", "list": "Список", "nothing": "Пока ничего нет.",
    "from": "от", "to": "до", "yes": "Да", "no": "Нет", "any": "любой",
    "timeline": "История", "comment": "Добавить комментарий", "send": "Отправить",
    "stage": "Этап", "move": "Перевести на",
    "stale": "Запись уже изменил кто-то другой; ваши изменения не сохранены. "
             "Её текущие значения:",
    "reload": "Загрузить текущую версию", "required": "обязательно",
    "required_in": "обязательно на этапах", "shown": "показано", "more": "Ещё",
    "sum": "Сумма", "reached": "Дошли", "conversion": "Конверсия",
    "median_time": "Медиана времени на этапе", "forecast": "Прогноз", "now": "Сейчас",
    "records": "Записи", "created": "Создано", "sign_out": "Выйти",
    "confirm_delete": "Удалить запись?", "language": "Язык", "not_found": "Не найдено",
    "refused": "Отказано", "all_of": "Все", "choose": "выберите…",
    "pipeline": "Воронка", "links": "Связи", "title": "Название", "apply": "Применить",
    "t_comment": "комментарий", "t_call": "звонок", "t_email": "письмо",
    "t_meeting": "встреча", "t_stage": "этап", "t_change": "изменение", "t_record": "связь",
    "create": "создано", "update": "изменено", "log": "Записать звонок, письмо или встречу",
    "subject": "Тема", "result": "Итог", "kind": "Вид", "direction": "Направление",
    "in": "входящий", "out": "исходящий",
    "t_automation": "автоматизация",
    "older": "Раньше", "newest": "Последние",
    "fill_in": "Заполнить",
}
_FA = {
    "entities": "بخش‌ها", "search": "جستجو", "filter": "فیلتر", "reset": "پاک کردن",
    "new": "جدید", "edit": "ویرایش", "delete": "حذف", "save": "ذخیره", "cancel": "انصراف",
    "next": "صفحهٔ بعد", "first": "صفحهٔ اول", "board": "تابلو", "funnel": "قیف",
    "list": "فهرست", "nothing": "هنوز چیزی نیست.", "from": "از", "to": "تا",
    "yes": "بله", "no": "خیر", "any": "همه", "timeline": "تاریخچه",
    "comment": "افزودن یادداشت", "send": "ارسال", "stage": "مرحله", "move": "انتقال به",
    "stale": "این رکورد را شخص دیگری تغییر داده است؛ تغییرات شما ذخیره نشد. "
             "مقادیر کنونی:",
    "reload": "بارگذاری نسخهٔ کنونی", "required": "الزامی", "required_in": "الزامی در",
    "shown": "نمایش", "more": "بیشتر", "sum": "جمع", "reached": "رسیده",
    "conversion": "نرخ تبدیل", "median_time": "میانهٔ زمان در مرحله",
    "forecast": "پیش‌بینی", "now": "اکنون", "records": "رکوردها", "created": "ایجاد",
    "sign_out": "خروج", "confirm_delete": "این رکورد حذف شود؟", "language": "زبان",
    "not_found": "یافت نشد", "refused": "رد شد", "all_of": "همه",
    "choose": "انتخاب…", "pipeline": "فرایند", "links": "پیوندها", "title": "عنوان",
    "apply": "اعمال",
    "t_comment": "یادداشت", "t_call": "تماس", "t_email": "ایمیل", "t_meeting": "جلسه",
    "t_stage": "مرحله", "t_change": "تغییر", "t_record": "پیوند", "create": "ایجاد شد",
    "update": "تغییر کرد", "log": "ثبت تماس، ایمیل یا جلسه", "subject": "موضوع",
    "result": "نتیجه", "kind": "نوع", "direction": "جهت", "in": "ورودی", "out": "خروجی",
    "t_automation": "خودکارسازی",
    "older": "قدیمی‌تر", "newest": "جدیدترین",
    "fill_in": "تکمیل کنید",
}
_ZH = {
    "entities": "目录", "search": "搜索", "filter": "筛选", "reset": "清除", "new": "新建",
    "edit": "编辑", "delete": "删除", "save": "保存", "cancel": "取消", "next": "下一页",
    "first": "第一页", "board": "看板", "funnel": "漏斗", "list": "列表",
    "nothing": "暂无内容。", "from": "从", "to": "到", "yes": "是", "no": "否",
    "any": "全部", "timeline": "时间线", "comment": "添加评论", "send": "发送",
    "stage": "阶段", "move": "移至",
    "stale": "此记录已被他人修改，您的更改未保存。当前值：",
    "reload": "加载当前版本", "required": "必填", "required_in": "必填于阶段",
    "shown": "显示", "more": "更多", "sum": "合计", "reached": "到达",
    "conversion": "转化率", "median_time": "阶段停留中位数", "forecast": "预测",
    "now": "当前", "records": "记录", "created": "创建", "sign_out": "退出",
    "confirm_delete": "删除此记录？", "language": "语言", "not_found": "未找到",
    "refused": "被拒绝", "all_of": "全部", "choose": "请选择…", "pipeline": "流程",
    "links": "关联", "title": "标题", "apply": "应用",
    "t_comment": "评论", "t_call": "电话", "t_email": "邮件", "t_meeting": "会议",
    "t_stage": "阶段", "t_change": "更改", "t_record": "关联", "create": "已创建",
    "update": "已更改", "log": "记录电话、邮件或会议", "subject": "主题", "result": "结果",
    "kind": "类型", "direction": "方向", "in": "呼入", "out": "呼出",
    "t_automation": "自动化",
    "older": "更早", "newest": "最新",
    "fill_in": "去填写",
}
WORDS: Mapping[str, Mapping[str, str]] = {"en": _EN, "ru": _RU, "fa": _FA, "zh": _ZH}


def words(language: str | None) -> dict[str, str]:
    """The app's words in `language` (its primary subtag), English where it has none."""
    primary = (language or "en").split("-")[0].lower()
    return {**_EN, **WORDS.get(primary, {})}


def direction(language: str | None) -> str:
    return "rtl" if (language or "").split("-")[0].lower() in RTL else "ltr"


def page_language(request: Request, languages: Sequence[str]) -> str | None:
    """The language a page is written in: ?lang=, the cookie, then Accept-Language."""
    lowered = {lang.lower(): lang for lang in languages}
    for asked in (request.query_params.get("lang"), request.cookies.get(COOKIE)):
        if asked and asked.lower() in lowered:
            return lowered[asked.lower()]
    return pick_language(request.headers.get("accept-language"), languages)
