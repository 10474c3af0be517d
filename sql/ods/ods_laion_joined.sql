-- ods_laion_joined: one row per joined row (base joined with punsafe / pwatermark).
with source as (

    select * from src_laion_joined

),

final as (

    select
        url,
        text,
        width,
        height,
        similarity,
        punsafe,
        pwatermark,
        language,
        source_hash,
        laion_hash(url, text) as hash,
        file_name,
        subset
    from source

)

select * from final
