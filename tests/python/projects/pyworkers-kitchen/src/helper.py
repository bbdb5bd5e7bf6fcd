def jsonable(value):
    return value
