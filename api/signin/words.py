"""The few words of the sign-in and invitation pages, per language (the web app's own
labels are its business). A language missing here falls back to English."""

from __future__ import annotations

RTL = frozenset({"fa", "ar", "he", "ur"})

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "sign_in": "Sign in", "email": "E-mail", "password": "Password",
        "wrong": "The e-mail or the password is not right.",
        "too_many": "Too many failed attempts. Try again in {minutes} min.",
        "choose": "Choose your password", "for": "for", "again": "Password again",
        "rule": "At least 10 characters, not your e-mail address.",
        "mismatch": "The two passwords differ.", "save": "Save and sign in",
        "invalid_link": "This invitation link does not work: it was used already, has "
                        "expired, or a newer one replaced it. Ask your administrator for a new one.",
        "go_sign_in": "Go to sign-in", "error": "Something went wrong. Try again.",
        "needs_js": "This page needs JavaScript.",
    },
    "ru": {
        "sign_in": "Вход", "email": "Эл. почта", "password": "Пароль",
        "wrong": "Неверная почта или пароль.",
        "too_many": "Слишком много неудачных попыток. Попробуйте через {minutes} мин.",
        "choose": "Придумайте пароль", "for": "для", "again": "Пароль ещё раз",
        "rule": "Не короче 10 символов и не совпадает с адресом почты.",
        "mismatch": "Пароли не совпадают.", "save": "Сохранить и войти",
        "invalid_link": "Ссылка-приглашение не действует: ею уже воспользовались, срок истёк "
                        "или выдана новая. Попросите администратора прислать новую.",
        "go_sign_in": "Ко входу", "error": "Что-то пошло не так. Попробуйте ещё раз.",
        "needs_js": "Для этой страницы нужен JavaScript.",
    },
    "fa": {
        "sign_in": "ورود", "email": "ایمیل", "password": "گذرواژه",
        "wrong": "ایمیل یا گذرواژه درست نیست.",
        "too_many": "تلاش‌های ناموفق بیش از حد. {minutes} دقیقه دیگر دوباره تلاش کنید.",
        "choose": "گذرواژهٔ خود را انتخاب کنید", "for": "برای", "again": "تکرار گذرواژه",
        "rule": "دست‌کم ۱۰ نویسه، و نه نشانی ایمیل شما.",
        "mismatch": "دو گذرواژه یکسان نیستند.", "save": "ذخیره و ورود",
        "invalid_link": "این پیوند دعوت کار نمی‌کند: پیش‌تر استفاده شده، منقضی شده یا پیوند "
                        "تازه‌تری جای آن را گرفته است. از مدیر سامانه پیوند تازه بخواهید.",
        "go_sign_in": "رفتن به ورود", "error": "مشکلی پیش آمد. دوباره تلاش کنید.",
        "needs_js": "این صفحه به جاوااسکریپت نیاز دارد.",
    },
    "zh": {
        "sign_in": "登录", "email": "电子邮件", "password": "密码",
        "wrong": "电子邮件或密码不正确。",
        "too_many": "失败次数过多，请 {minutes} 分钟后再试。",
        "choose": "设置您的密码", "for": "账户", "again": "再次输入密码",
        "rule": "至少 10 个字符，且不能是您的电子邮件地址。",
        "mismatch": "两次输入的密码不一致。", "save": "保存并登录",
        "invalid_link": "此邀请链接无效：它已被使用、已过期或已被新的链接取代。请向管理员索取新链接。",
        "go_sign_in": "前往登录", "error": "出了点问题，请重试。",
        "needs_js": "此页面需要 JavaScript。",
    },
}

#: each language's name in itself, for the switcher
NAMES = {"en": "English", "ru": "Русский", "fa": "فارسی", "zh": "中文"}
